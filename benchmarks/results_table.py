"""The README's results table: `wnet evaluate` on a BSDS500 split for every method, in one run.

Each row is one `wnet evaluate` command (printed as it runs); its metrics.json is read back.
Prints the table as JSON on stdout and writes it as Markdown to ``<out>/results.md``, followed
by a second table: each row that runs the W-Net against the same recipe without the network,
with the 95% interval of a paired bootstrap over the images (``wnet compare``)::

    .venv/bin/python benchmarks/results_table.py --split val --jobs 2 --out bench-out/results

The W-Net paper's own rows (BSDS500 *test*, copied from the paper) are added at the end,
marked as such: they are not measured here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (row name, extra `wnet evaluate` arguments, the row it is compared with or None). Each row's
#: output folder is named after its arguments (``<out>/default``, ``<out>/fast``,
#: ``<out>/recipe-network``, ``<out>/method-slic``, ...); the third field names the folder of the
#: same recipe without the network, against which a paired bootstrap over the images (``wnet
#: compare``) tells whether the row's difference is more than chance.
ROWS = [
    ("wnet, default recipe (image cues only)", [], None),
    ("wnet --fast (the default's cues and hierarchy on a 2x coarser grid)", ["--fast"], None),
    (
        "wnet --recipe network (the default plus the shipped W-Net's edges, mirrored)",
        ["--recipe", "network"],
        "default",
    ),
    (
        "wnet --recipe boundaries (the default plus the shipped boundaries model's learned boundaries)",
        ["--recipe", "boundaries"],
        "default",
    ),
    ("Felzenszwalb-Huttenlocher (scikit-image)", ["--method", "felzenszwalb"], None),
    ("SLIC (scikit-image)", ["--method", "slic"], None),
    ("Quickshift (scikit-image)", ["--method", "quickshift"], None),
    ("Watershed (scikit-image)", ["--method", "watershed"], None),
]

#: The measures of the comparison table (names of wnetcli.evaluation.counts.MEASURES).
COMPARED = ("covering ODS", "PRI ODS", "VI ODS", "boundary F ODS")


#: Published on BSDS500 test (Xia & Kulis 2017, Table 1; boundary F of gPb-owt-ucm from
#: Arbelaez et al. 2011). Not measured by this script.
PAPER = [
    ("paper, test: W-Net (CRF, merging)", {"sc": (0.57, 0.62), "pri": (0.81, 0.84), "vi": (1.76, 1.60)}),
    ("paper, test: W-Net + gPb ucm", {"sc": (0.59, 0.64), "pri": (0.82, 0.85), "vi": (1.67, 1.47)}),
    (
        "paper, test: gPb-owt-ucm",
        {"sc": (0.59, 0.65), "pri": (0.83, 0.86), "vi": (1.69, 1.48), "f": (0.73, 0.76), "ap": 0.73},
    ),
    ("paper, test: Felzenszwalb-Huttenlocher", {"sc": (0.52, 0.57), "pri": (0.80, 0.82), "vi": (2.21, 1.87)}),
]


def reads_network(extra: list[str]) -> bool:
    """Whether the row's recipe (``--recipe``, else the default) runs the network."""
    if "--method" in extra or "--results" in extra:
        return False
    from wnetcli.segmentation import load_recipe

    recipe = extra[extra.index("--recipe") + 1] if "--recipe" in extra else "fast" if "--fast" in extra else "default"
    return load_recipe(recipe).reads_network


def run_row(args: argparse.Namespace, name: str, extra: list[str], folder: Path) -> dict:
    """Runs one `wnet evaluate` row (or, with --keep, reads back the one already in `folder`)."""
    command = [
        str(ROOT / ".venv" / "bin" / "wnet"), "evaluate", "--bsds", str(args.bsds), "--split", args.split,
        "--jobs", str(args.jobs), "--out", str(folder), *extra,
    ]
    if args.model is not None and reads_network(extra):
        command += ["--model", str(args.model)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    if args.keep and (folder / "metrics.json").exists():
        print("kept", folder / "metrics.json", file=sys.stderr, flush=True)
    else:
        print("$", shlex.join(command), file=sys.stderr, flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((folder / "metrics.json").read_text())
    b, c, p, v = metrics["boundary"], metrics["covering"], metrics["pri"], metrics["vi"]
    return {
        "method": name,
        "command": shlex.join(["wnet", *command[1:]]),
        "sc": (c["ods"], c["ois"]),
        "pri": (p["ods"], p["ois"]),
        "vi": (v["ods"], v["ois"]),
        "f": (b["ods"]["f"], b["ois"]["f"]),
        "ap": b["ap"],
        "images": metrics["images"],
        "seconds": metrics["seconds"],
    }


def folder_name(extra: list[str]) -> str:
    """The output folder of a row: its arguments joined, or ``default``."""
    return "-".join(part.lstrip("-") for part in extra) or "default"


def compare_with(baseline: Path, candidate: Path) -> dict:
    """The paired bootstrap of `wnet compare` (2,000 draws, 95%, seed 0), as its JSON."""
    from wnetcli.evaluation import RunCounts, compare_runs

    comparison = compare_runs(RunCounts.load(baseline), RunCounts.load(candidate))
    return {**comparison.to_dict(), "baseline_folder": baseline.name}


def comparison_markdown(rows: list[dict]) -> str:
    """The rows that have a baseline: difference and 95% interval of each COMPARED measure."""
    compared = [row for row in rows if "against" in row]
    if not compared:
        return ""
    lines = [
        "| method | against the row | " + " | ".join(f"{name} (95% interval)" for name in COMPARED) + " |",
        "|---|---|" + "---|" * len(COMPARED),
    ]
    for row in compared:
        measures = row["against"]["measures"]
        cells = []
        for name in COMPARED:
            m = measures[name]
            low, high = m["interval"]
            mark = {"better": " **better**", "worse": " **worse**"}.get(m["verdict"], "")
            cells.append(f"{m['difference']:+.3f} ({low:+.3f}..{high:+.3f}){mark}")
        lines.append(f"| {row['method']} | {row['against']['baseline_folder']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], split: str) -> str:
    def pair(values, digits=2):
        return "/".join(f"{x:.{digits}f}" for x in values) if values else "-"

    lines = [
        f"| method (BSDS500 {split} unless marked) | SC ODS/OIS | PRI ODS/OIS | VI ODS/OIS | F ODS/OIS | AP |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ap = f"{row['ap']:.3f}" if row.get("ap") is not None else "-"
        lines.append(
            f"| {row['method']} | {pair(row.get('sc'), 3)} | {pair(row.get('pri'), 3)} | {pair(row.get('vi'), 3)} "
            f"| {pair(row.get('f'), 3)} | {ap} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bsds", type=Path, default=ROOT.parent / "shared" / "data" / "bsds500")
    parser.add_argument("--split", default="val")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--only", action="append", default=None, help="run only rows whose name contains this")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "results")
    parser.add_argument(
        "--keep", action="store_true",
        help="reuse a row whose <out>/<row folder>/metrics.json exists (rows are slow: quickshift takes ~25 min)",
    )
    args = parser.parse_args()
    rows = []
    for name, extra, baseline in ROWS:
        if args.only and not any(part.lower() in name.lower() for part in args.only):
            continue
        folder = args.out / folder_name(extra)
        row = run_row(args, name, extra, folder)
        if baseline is not None and (args.out / baseline / "counts.npz").exists():
            row["against"] = compare_with(args.out / baseline, folder)
        rows.append(row)
    measured = list(rows)
    rows += [{"method": name, **values} for name, values in PAPER]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown(rows, args.split) + "\n" + comparison_markdown(measured))
    print(json.dumps({"split": args.split, "rows": measured}, indent=1))


if __name__ == "__main__":
    main()
