"""Type checks shared by the options dataclasses (the recipe's stages and cues, ``SegmentOptions``,
``Cut``, ``BatchOptions``, ``EvaluationOptions``).

Their ``__post_init__`` check ranges; this module checks that each field holds the type its
annotation names, first, so that a library caller's ``regions=2.5``, ``level="0.5"`` or
``Use(cue, boundary=nan)`` is an :class:`~wnetcli.errors.InputError` naming the field, not a bare
``TypeError`` or ``IndexError`` deep in the post-processing, or a silent no-op.
"""

from __future__ import annotations

import math
import sys
import types
import typing
from dataclasses import fields
from functools import cache
from pathlib import Path

from wnetcli.errors import InputError

__all__ = ["check_field_types", "read_settings_file"]


@cache
def _hints(cls: type) -> dict[str, object]:
    """The evaluated annotations of ``cls``'s fields; a field whose annotation names a type
    imported only for type checkers (kept out of the import for speed) is left unchecked."""
    namespace = vars(sys.modules[cls.__module__])
    hints: dict[str, object] = {}
    for field in fields(cls):
        try:
            hints[field.name] = eval(field.type, namespace) if isinstance(field.type, str) else field.type
        except NameError:
            hints[field.name] = object
    return hints


def _matches(value: object, hint: object) -> bool:
    """Whether ``value`` fits ``hint`` (int, float, bool, str, Path, classes, ``X | None``,
    ``tuple[X, ...]`` and ``tuple[X, Y]``, for which a list does too). A float must be finite
    (an int does); a bool is not a number."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):  # a list from JSON settings does as well
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(value) == len(args) and all(_matches(item, arg) for item, arg in zip(value, args, strict=True))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is Path:
        return isinstance(value, (str, Path))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not model: left to the range checks


def check_field_types(options: object) -> None:
    """Raise :class:`InputError` for the first field of the dataclass ``options`` whose value
    does not fit its annotation."""
    hints = _hints(type(options))
    for field in fields(options):
        value = getattr(options, field.name)
        if not _matches(value, hints[field.name]):
            hint = hints[field.name]
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise InputError(f"{type(options).__name__}.{field.name} must be {expected}, got {value!r}")


def read_settings_file(path: str | Path, what: str = "settings file") -> dict:
    """Read a file of settings: JSON (``.json``) or TOML (any other suffix), as a dict.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is, for the messages (``"config file"``, ``"recipe"``).

    Raises
    ------
    InputError
        A file that cannot be read or parsed, or that holds no table, in one line naming it.
    """
    import json

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError as exc:  # Python 3.10
                raise InputError(f"{path}: TOML files need Python 3.11+; write the {what} as JSON") from exc
            values = tomllib.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise InputError(f"cannot parse {what} {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise InputError(f"{what} {path} must hold a table of settings")
    return values
