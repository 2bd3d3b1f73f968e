"""Print the recipe-key tables of docs/design.md from the dataclasses' fields and docstrings.

    .venv/bin/python docs/recipe_tables.py > /tmp/tables.md   # then paste over the tables in design.md

Each table row is a field (``dataclasses.fields``: name and default) with its entry of the
class docstring's ``Attributes:`` section.
"""

import dataclasses
import inspect
import re

from wnetcli.segmentation.crf import CRFOptions
from wnetcli.segmentation.cues import CUES
from wnetcli.segmentation.hierarchy import MergeOptions, SuperpixelOptions
from wnetcli.segmentation.levels import LevelScale
from wnetcli.segmentation.recipe import Grid, NetworkRun, Use

STAGES = {"grid": Grid, "superpixels": SuperpixelOptions, "merge": MergeOptions, "levels": LevelScale,
          "crf": CRFOptions, "network": NetworkRun}


def attributes(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of a Google-style class docstring, one line each."""
    found: dict[str, str] = {}
    name = None
    section = inspect.cleandoc(cls.__doc__ or "").split("Attributes:", 1)[-1]
    for line in section.splitlines():
        if match := re.match(r"^    (\w+): (.*)$", line):
            name, found[match[1]] = match[1], match[2]
        elif line.startswith("        ") and name:
            found[name] += " " + line.strip()
    return found


def markdown(text: str) -> str:
    """Sphinx roles and double backquotes as plain Markdown code."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: f"`{m[1].split('.')[-1]}`", text)
    return text.replace("``", "`").replace("|", "\\|")


def value(default: object) -> str:
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return "[" + ", ".join(map(str, default)) + "]"
    return str(default)


def table(cls: type, title: str) -> str:
    docs = attributes(cls)
    rows = [f"#### `{title}`: {cls.__name__} (`{cls.__module__}`)", "", "| key | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.name != "cue":
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            rows.append(f"| `{field.name}` | `{value(default)}` | {markdown(docs.get(field.name, ''))} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(Use, "[cues.NAME] weights"))
    for name, cls in CUES.items():
        summary = markdown(" ".join(inspect.cleandoc(cls.__doc__).split("\n\n")[0].split()))
        print(f"{table(cls, f'[cues.{name}]')}\n{summary} Gives {', '.join(sorted(cls.gives))}; "
              f"reads {', '.join(sorted(cls().reads))}.\n")
    for section, cls in STAGES.items():
        print(table(cls, f"[{section}]"))
