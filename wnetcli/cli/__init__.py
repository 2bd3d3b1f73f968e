"""The ``wnet`` command line: a thin Typer layer over the library.

Each command lives in its own module (``train``, ``export``, ``segment``, ``evaluate``, ``compare``),
validates its arguments, calls one library function and reports the result with Rich.
The :func:`command` decorator is the single error boundary: a :class:`~wnetcli.errors.WNetError` becomes one
red line on stderr and exit code 1; the traceback is shown only with ``--debug``.
Heavy imports (torch, onnxruntime, scikit-image) happen inside the commands.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from wnetcli import __version__
from wnetcli.errors import WNetError

# rich_markup_mode=None: click's plain help formatter rather than Typer's Rich panels. With the
# panels (Typer 0.29.2, Rich 15) every flag showed a "<bool>" value placeholder (Typer's Rich
# path asks each option for its type whether or not it is a flag), the help column was squeezed
# to ~18 characters at 80 columns so that a long word such as "BSR/BSDS500/data/..." was cut
# with an ellipsis, and docstrings kept their hard line breaks. The plain formatter shows no
# value for a flag, wraps help texts at the terminal's width (at most 80 columns) and reflows
# docstring paragraphs. tests/cli/test_help.py checks this at 80 columns.
app = typer.Typer(
    name="wnet",
    help="Fully unsupervised image segmentation with W-Net: train, export, segment, evaluate, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Rich console for messages and progress (stderr, so stdout stays clean for data).
console = Console(stderr=True)

_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"wnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Fully unsupervised image segmentation with W-Net (Xia & Kulis 2017)."""
    _state["debug"] = debug


def is_debug() -> bool:
    """True when ``--debug`` was given (commands may print extra detail)."""
    return _state["debug"]


def recipe_option():
    """The ``--recipe NAME|FILE`` option of segment and evaluate."""
    return typer.Option(
        None, "--recipe",
        help="Post-processing recipe: default, fast, network (the W-Net's edges), boundaries (its learned "
        "boundaries), or a recipe file (.toml); see docs/design.md. Default: default.",
    )


def fast_option():
    """The ``--fast`` flag of segment and evaluate: ``--recipe fast``."""
    return typer.Option(
        False, "--fast",
        help="Short for --recipe fast: cues and hierarchy on a 2x coarser grid, about 3x faster, slightly "
        "lower scores.",
    )


def resolve_recipe(recipe: str | None, fast: bool):
    """The :class:`~wnetcli.segmentation.recipe.Recipe` that ``--recipe`` and ``--fast`` name.

    Raises
    ------
    InputError
        For both flags at once, an unknown name or a bad recipe file.
    """
    from wnetcli.errors import InputError
    from wnetcli.segmentation.recipe import load_recipe

    if fast and recipe is not None and recipe != "fast":
        raise InputError(f"--fast is short for --recipe fast: give one of --fast and --recipe {recipe}")
    return load_recipe("fast" if fast else recipe or "default")


def unused_model_note(model, recipe_name: str) -> str:
    """The one plain line that says a given ``--model`` was not run, and how to run it."""
    return (
        f"note: --model {model} was checked but not run: recipe {recipe_name!r} reads none of the network's "
        "output; --recipe network or boundaries (or a recipe file with a network cue) runs it"
    )


def transient_progress(*columns):
    """A Rich progress bar that disappears when done, on :data:`console`.

    Off where stderr is not a terminal (a log file, a CI job): there a bar cannot redraw, and
    Rich would leave an empty line in front of the report or the one-line error.
    """
    from rich.progress import Progress

    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


@contextlib.contextmanager
def progress_lines(label: str):
    """Yield a ``progress(done, total)`` callback for a long loop over items.

    In a terminal it drives a transient bar (:func:`transient_progress`); elsewhere (a log
    file, a cluster job) it prints ``label: done/total`` each time another 5% is done, since
    a bar there would show nothing until the end.
    """
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        columns = (TextColumn(escape(label)), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with transient_progress(*columns) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    due = milestones()

    def report(done: int, total: int | None) -> None:
        if due(done, total):
            console.print(f"{escape(label)}: {done}/{total}", highlight=False)

    yield report


def milestones(first: int = 1) -> Callable[[int, int | None], bool]:
    """A ``due(done, total)`` check for plain progress lines: true when ``done`` first reaches
    ``first``, then the first time it reaches each further 5% of ``total`` (calls may skip
    values: a training run reports every few steps)."""
    next_due = first

    def due(done: int, total: int | None) -> bool:
        nonlocal next_due
        if not total or done < next_due:
            return False
        step = max(1, total // 20)
        next_due = (done // step + 1) * step
        return True

    return due


_F = TypeVar("_F", bound=Callable[..., object])


def command(*args, **kwargs) -> Callable[[_F], _F]:
    """Register a function as a ``wnet`` subcommand, wrapped in the CLI's error boundary.

    A :class:`~wnetcli.errors.WNetError` becomes one red line on stderr and exit code 1
    (with the traceback first under ``--debug``); any other exception is a bug: one line
    and exit code 2, or the full traceback under ``--debug``. The first Ctrl-C or SIGTERM
    raises :class:`KeyboardInterrupt` in the command, any later one nothing
    (:func:`wnetcli.workers.interrupt_once`). Accepts the arguments of ``typer.Typer.command``.
    """

    def decorator(func: _F) -> _F:
        # The `wnet --help` listing shows the docstring's whole first paragraph, wrapped: left to
        # click, it is cut to the width left beside the command names and ends in "...".
        if func.__doc__ and "short_help" not in kwargs:
            kwargs["short_help"] = " ".join(inspect.cleandoc(func.__doc__).split("\n\n")[0].split())

        @functools.wraps(func)  # Typer reads the wrapped signature through __wrapped__
        def wrapper(*call_args, **call_kwargs):
            from wnetcli.workers import interrupt_once

            try:
                # Ctrl-C and SIGTERM (kill, a cluster's time limit): a clean stop, and a second
                # one never breaks off the clean-up that the first started (wnetcli.workers).
                with interrupt_once():
                    return func(*call_args, **call_kwargs)
            except (typer.Exit, typer.Abort, KeyboardInterrupt):
                raise
            except WNetError as exc:
                if _state["debug"]:
                    console.print_exception()
                # escape: messages hold text like "wnet[train]" that Rich would take for markup
                console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                raise typer.Exit(1) from None
            except Exception as exc:
                if _state["debug"]:
                    raise
                console.print(
                    f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}"
                    " (this is a bug; rerun with --debug for the traceback)",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(2) from None

        app.command(*args, **kwargs)(wrapper)
        return func

    return decorator


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: tune the allocator, then run the Typer app."""
    from wnetcli.tuning import tune_malloc

    tune_malloc()
    app(args=argv, prog_name="wnet")


# Commands register themselves on ``app`` when their modules are imported; each keeps its
# heavy imports (torch, onnxruntime, scikit-image) inside the command function so that
# ``wnet --help`` stays fast and ``segment``/``evaluate`` never touch torch.
from wnetcli.cli import compare, evaluate, export, segment, train  # noqa: E402, F401
