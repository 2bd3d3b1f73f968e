"""``wnet evaluate``: the BSDS500 benchmark (boundaries, covering, PRI, VI); never imports torch."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from wnetcli.cli import command, console, fast_option, progress_lines, recipe_option, resolve_recipe, unused_model_note


def _build_method(
    results: Path | None, method: str | None, model: Path | None, recipe: str | None, fast: bool, device: str,
    jobs: int,
):
    """The method under evaluation: precomputed --results, a scikit-image --method, or (the
    default) the segmentation pipeline with --recipe (and --model where the recipe reads it)."""
    from wnetcli.errors import InputError
    from wnetcli.evaluation import Baseline, ResultsDir, SegmenterMethod

    chosen = [name for name, value in (("--results", results), ("--method", method)) if value]
    pipeline = [name for name, value in (("--model", model), ("--recipe", recipe), ("--fast", fast)) if value]
    if len(chosen) > 1 or (chosen and pipeline):
        given = " and ".join(chosen + pipeline)
        raise InputError(f"give one of --results, --method or the pipeline's flags, not {given}")
    if results is not None:
        return ResultsDir(results, name=results.name or "results")
    if method is not None:
        from wnetcli.evaluation.baselines import BASELINES

        if method.lower() == "classical":  # the name of the recipe-less days
            raise InputError("--method classical is now the default: run without --method (or --recipe default)")
        if method.lower() not in BASELINES:
            raise InputError(f"unknown method {method!r}; choose one of {', '.join(BASELINES)}")
        return Baseline(method.lower())
    from wnetcli.segmentation import SegmentOptions

    chosen_recipe = resolve_recipe(recipe, fast)
    if model is not None and not chosen_recipe.reads_network:
        console.print(escape(unused_model_note(model, chosen_recipe.name)), highlight=False, soft_wrap=True)
    # Each worker process runs its own onnxruntime session: share the cores instead of oversubscribing.
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    options = SegmentOptions(recipe=chosen_recipe, device=device, threads=threads)
    name = chosen_recipe.name + (f"-{model.stem}" if model is not None and chosen_recipe.reads_network else "")
    return SegmenterMethod(model, options, name=name)


@command("evaluate")
def evaluate(
    bsds: Path = typer.Option(..., "--bsds", help="BSDS500 root (BSR/BSDS500/data/... or {images,groundTruth}/SPLIT)."),
    split: str = typer.Option("test", "--split", help="test, val or train."),
    results: Path | None = typer.Option(
        None, "--results", help="Precomputed results, one per image id: .mat (ucm2/segs), .npy, .png, or a folder."
    ),
    method: str | None = typer.Option(
        None, "--method", help="A scikit-image baseline instead of wnet: felzenszwalb, slic, quickshift or watershed."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m",
        help="Exported W-Net model (.onnx), for recipes that read the network (default: the shipped model "
        "the recipe names).",
    ),
    recipe: str | None = recipe_option(),
    fast: bool = fast_option(),
    thresholds: int = typer.Option(99, "--thresholds", min=1, help="Thresholds for soft maps and ucm2."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N images."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: ./eval-<method>)."),
    save_results: bool = typer.Option(
        False, "--save-results", help="Write each prediction to <out>/results/ for rescoring with --results."
    ),
    regions: bool = typer.Option(True, "--regions/--no-regions", help="Run the region benchmark too."),
    device: str = typer.Option("auto", "--device", help="Where the network runs: auto, cpu or cuda."),
) -> None:
    """Score wnet (or a baseline, or precomputed results) on BSDS500 as the official benchmark does.

    Boundary P/R/F (ODS, OIS, AP), covering, PRI, VI. Writes metrics.json (with the recipe that made
    the results), per-image and per-threshold CSVs and a precision-recall plot to --out.
    """
    from wnetcli.atomic import prepare_folder
    from wnetcli.evaluation import EvaluationOptions, find_split, write_report

    images = find_split(bsds, split.lower())
    if limit is not None:
        images = images[:limit]
    chosen = _build_method(results, method, model, recipe, fast, device, jobs)
    out = prepare_folder(out or Path(f"eval-{chosen.name}"))  # before the work, not after it
    options = EvaluationOptions(
        thresholds=thresholds, jobs=jobs, regions=regions, save_dir=out / "results" if save_results else None
    )
    try:
        result = _run_with_progress(images, chosen, options)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] no report written", highlight=False)
        raise typer.Exit(130) from None
    written = write_report(result, out)
    _print_result(result)
    console.print(f"wrote {len(written)} files to {out}", highlight=False)


def _run_with_progress(images, method, options):
    from wnetcli.evaluation import evaluate as run_evaluation

    with progress_lines(f"evaluating {method.name}") as progress:
        return run_evaluation(images, method, options, progress=progress)


def _print_result(result) -> None:
    from rich.table import Table

    table = Table(title=f"BSDS benchmark: {result.method} ({len(result.images)} images, {result.seconds:.1f} s)")
    for name in ("measure", "ODS", "OIS", "AP / Best", "ODS threshold"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    b = result.boundary
    if b is not None:
        table.add_row("boundary F", f"{b.ods_f:.3f}", f"{b.ois_f:.3f}", f"{b.ap:.3f}", f"{b.ods_threshold:.3f}")
        table.add_row("  recall", f"{b.ods_recall:.3f}", f"{b.ois_recall:.3f}", "", "")
        table.add_row("  precision", f"{b.ods_precision:.3f}", f"{b.ois_precision:.3f}", "", "")
    r = result.regions
    if r is not None:
        table.add_row(
            "covering",
            f"{r.covering_ods:.3f}",
            f"{r.covering_ois:.3f}",
            f"{r.covering_best:.3f}",
            f"{r.covering_ods_threshold:.3f}",
        )
        table.add_row("PRI", f"{r.pri_ods:.3f}", f"{r.pri_ois:.3f}", "", f"{r.pri_ods_threshold:.3f}")
        table.add_row("VI", f"{r.vi_ods:.3f}", f"{r.vi_ois:.3f}", "", f"{r.vi_ods_threshold:.3f}")
    console.print(table)
