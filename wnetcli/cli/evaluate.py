"""``wnet evaluate``: the BSDS500 benchmark (boundaries, covering, PRI, VI); never imports torch."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from wnetcli.cli import (
    command,
    console,
    fast_option,
    merge_only_option,
    postprocess_overrides,
    progress_lines,
    tta_option,
    wnet_edges_option,
    wnet_share_option,
)


def _build_method(
    results: Path | None,
    method: str | None,
    model: Path | None,
    crf: bool,
    merge: bool,
    device: str,
    jobs: int,
    wnet_share: float | None = None,
    fast: bool = False,
    wnet_edges: float | None = None,
    tta: bool = False,
    merge_only: bool = False,
):
    """The method under evaluation, from the mutually exclusive --results / --method / --model."""
    from wnetcli.errors import InputError
    from wnetcli.evaluation import Baseline, HierarchyMethod, ResultsDir, SegmenterMethod

    chosen = [name for name, value in (("--results", results), ("--method", method), ("--model", model)) if value]
    if len(chosen) > 1:
        raise InputError(f"give one of --results, --method, --model, not {' and '.join(chosen)}")
    if results is not None:
        return ResultsDir(results, name=results.name or "results")
    if method is not None and method.lower() == "classical":
        if not fast:
            return HierarchyMethod()
        from wnetcli.segmentation.postprocess import PostprocessOptions

        return HierarchyMethod(PostprocessOptions(**postprocess_overrides(None, fast)), name="classical-fast")
    if method is not None:
        from wnetcli.evaluation.baselines import BASELINES

        if method.lower() not in BASELINES:  # the library's message would not name "classical"
            raise InputError(f"unknown method {method!r}; choose one of {', '.join([*BASELINES, 'classical'])}")
        return Baseline(method.lower())
    if model is not None and not model.is_file():
        raise InputError(f"model not found: {model}")
    try:
        from wnetcli.segmentation import SegmentOptions
        from wnetcli.segmentation.postprocess import PostprocessOptions
    except ImportError as exc:
        from wnetcli.errors import ModelError

        raise ModelError(
            f"the W-Net segmentation pipeline is not available ({exc}); use --results or --method"
        ) from exc
    # Each worker process runs its own onnxruntime session: share the cores instead of oversubscribing.
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    # The hierarchy needs the soft maps only through the W-Net cues; --no-merge scores their argmax.
    overrides = postprocess_overrides(wnet_share, fast, wnet_edges, merge_only)
    post = PostprocessOptions(crf=crf, keep_probs=not merge, **overrides)
    options = SegmentOptions(device=device, threads=threads, tta=tta, postprocess=post)
    name = (model.stem if model else "wnet") + ("" if crf else "-no-crf") + ("" if merge else "-no-merge")
    name += "" if wnet_share is None else f"-wnet-share-{wnet_share:g}"
    name += "" if wnet_edges is None else f"-wnet-edges-{wnet_edges:g}"
    name += "-merge-only" if merge_only else ""
    name += "-tta" if tta else ""
    name += "-fast" if fast else ""
    return SegmenterMethod(model, options, name=name, merge=merge)


@command("evaluate")
def evaluate(
    bsds: Path = typer.Option(..., "--bsds", help="BSDS500 root (BSR/BSDS500/data/... or {images,groundTruth}/SPLIT)."),
    split: str = typer.Option("test", "--split", help="test, val or train."),
    results: Path | None = typer.Option(
        None, "--results", help="Precomputed results, one per image id: .mat (ucm2/segs), .npy, .png, or a folder."
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        help="felzenszwalb, slic, quickshift, watershed (scikit-image hierarchies) or classical "
        "(wnet's own hierarchy without the network).",
    ),
    model: Path | None = typer.Option(None, "--model", "-m", help="Exported W-Net model (.onnx) to run."),
    thresholds: int = typer.Option(99, "--thresholds", min=1, help="Thresholds for soft maps and ucm2."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N images."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: ./eval-<method>)."),
    save_results: bool = typer.Option(
        False, "--save-results", help="Write each prediction to <out>/results/ for rescoring with --results."
    ),
    regions: bool = typer.Option(True, "--regions/--no-regions", help="Run the region benchmark too."),
    crf: bool = typer.Option(True, "--crf/--no-crf", help="W-Net pipeline: CRF on the soft segmentation."),
    merge: bool = typer.Option(
        True, "--merge/--no-merge", help="W-Net pipeline: the hierarchy, or the network's argmax segments alone."
    ),
    wnet_share: float | None = wnet_share_option("W-Net pipeline: "),
    wnet_edges: float | None = wnet_edges_option("W-Net pipeline: "),
    merge_only: bool = merge_only_option("W-Net pipeline: "),
    tta: bool = tta_option("W-Net pipeline: "),
    fast: bool = fast_option("W-Net pipeline and classical: "),
    device: str = typer.Option("auto", "--device", help="W-Net pipeline: auto, cpu or cuda."),
) -> None:
    """Score a method on BSDS500 as the official benchmark does: boundary P/R/F (ODS, OIS, AP), covering, PRI, VI.

    Writes metrics.json, per-image and per-threshold CSVs and a precision-recall plot to --out.
    """
    from wnetcli.atomic import prepare_folder
    from wnetcli.evaluation import EvaluationOptions, find_split, write_report

    images = find_split(bsds, split.lower())
    if limit is not None:
        images = images[:limit]
    chosen = _build_method(
        results, method, model, crf, merge, device, jobs, wnet_share, fast, wnet_edges, tta, merge_only
    )
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
