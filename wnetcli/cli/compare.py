"""``wnet compare``: two ``wnet evaluate`` runs side by side, with bootstrap confidence intervals."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from wnetcli.cli import command, console


@command("compare")
def compare(
    baseline: Path = typer.Argument(
        ..., help="Output folder of the baseline's `wnet evaluate` run.", show_default=False
    ),
    candidate: Path = typer.Argument(
        ..., help="Output folder of the candidate's run (same images).", show_default=False
    ),
    resamples: int = typer.Option(2000, "--resamples", min=10, help="Bootstrap draws of the images."),
    confidence: float = typer.Option(
        0.95, "--confidence", min=0.5, max=0.999, help="Coverage of the confidence intervals."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws (same seed, same intervals)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the comparison as JSON to this file."),
) -> None:
    """Is CANDIDATE better than BASELINE on the benchmark, or is the difference chance?

    Draws the images with replacement (paired: the same draw for both runs), rescores both runs
    on each draw from their counts.npz, and reports the difference of every measure with its
    percentile confidence interval. A difference whose interval holds 0 is not established.
    """
    from rich import box
    from rich.table import Table

    from wnetcli.evaluation import RunCounts, compare_runs

    first, second = RunCounts.load(baseline), RunCounts.load(candidate)
    with console.status(f"{resamples} bootstrap draws of {len(first.ids)} images"):
        result = compare_runs(first, second, resamples=resamples, confidence=confidence, seed=seed)
    table = Table(
        title=f"A = {result.baseline}, B = {result.candidate}: {result.images} images, {result.resamples} draws",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in ("measure", "A", "B", "B - A", f"{100 * confidence:g}% interval", "B wins", "verdict"):
        table.add_column(name, justify="left" if name in ("measure", "verdict") else "right", no_wrap=True)
    colours = {"better": "green", "worse": "red", "unclear": "dim"}
    for m in result.measures:
        table.add_row(
            m.name,
            f"{m.baseline:.3f}",
            f"{m.candidate:.3f}",
            f"{m.difference:+.3f}",
            f"{m.low:+.3f}..{m.high:+.3f}",
            f"{100 * m.better_share:.0f}%",
            f"[{colours[m.verdict]}]{m.verdict}[/]",
        )
    console.print(table)
    console.print(
        f"[dim]VI: lower is better. B wins: the share of draws on which B scores better. The "
        f"intervals cover the choice of images only (not retraining); with {len(result.measures)} "
        f"measures, about {len(result.measures) * (1 - confidence):.1f} exclude 0 by chance.[/]",
        highlight=False,
    )
    if out is not None:
        from wnetcli.atomic import atomic_write_text

        atomic_write_text(out, json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"wrote {out}", highlight=False)
