"""``wnet segment``: segment images and folders with an exported model (never imports torch)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from wnetcli.cli import (
    command,
    console,
    fast_option,
    progress_lines,
    recipe_option,
    resolve_recipe,
    unused_model_note,
)

_MAX_FAILURES_SHOWN = 20


def _split_save(values: list[str]) -> tuple[str, ...]:
    """``--save overlay,ucm --save probs`` -> ("overlay", "ucm", "probs"), order kept, no repeats."""
    kinds: list[str] = []
    for value in values:
        for kind in value.split(","):
            kind = kind.strip().lower()
            if kind and kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


@command("segment")
def segment(
    inputs: list[Path] = typer.Argument(
        ..., help="Image files and/or folders to segment.", show_default=False, metavar="PATH"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (mirrors the input tree)."),
    model: Path | None = typer.Option(
        None, "--model", "-m",
        help="Exported model (.onnx) from `wnet export`, for recipes that read the network (default: the "
        "shipped model the recipe names).",
    ),
    recipe: str | None = recipe_option(),
    fast: bool = fast_option(),
    save: list[str] = typer.Option(
        [], "--save",
        help="Extra outputs, repeatable or comma-separated: overlay, color, ucm, probs, boundaries (the last "
        "two run the network; boundaries needs a model trained with them).",
    ),
    ucm_format: str = typer.Option(
        "png", "--ucm-format", help="ucm file format: png (16-bit) or npy (float32)."
    ),
    regions: int | None = typer.Option(
        None, "--regions", min=1, help="Cut the hierarchy into exactly N regions (where it has that many)."
    ),
    level: float | None = typer.Option(
        None, "--level", min=0.0, max=1.0,
        help="Cut the hierarchy at level T: 1 is where each image's strongest structure merges (one region), "
        "0 its finest superpixels; default 0.5.",
    ),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Descend into subfolders of input folders."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo images whose outputs exist (default: skip)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="Process only shard I of N (0 <= I < N), e.g. 0/4."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if it works, else CPU), cpu or cuda."),
    workers: int | None = typer.Option(
        None, "--workers", min=0,
        help="Post-processing processes (default: one per core, none for a single image; 0: no overlap).",
    ),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1, help="Images per inference call."),
    threads: int | None = typer.Option(
        None, "--threads", min=1,
        help="Inference threads per call (default: on the CPU the cores shared among the --streams calls).",
    ),
    streams: int | None = typer.Option(
        None, "--streams", min=1,
        help="Inference calls at once (default: 2 on a CPU with 2+ cores, 1 on CUDA).",
    ),
    max_size: int = typer.Option(
        2048, "--max-size", min=0,
        help="Images whose longer side is larger than this are segmented on a grid an integer factor coarser "
        "(the outputs are mapped back to full size). 0: never.",
    ),
) -> None:
    """Segment images into label maps (and optionally overlays, colours, ucm hierarchies, soft maps, boundary maps).

    Outputs that exist are skipped, so a rerun resumes; the exit code is 1 if any image failed.
    """
    from wnetcli.errors import InputError
    from wnetcli.segmentation import BatchOptions, Cut, SegmentOptions
    from wnetcli.segmentation.batch import parse_shard

    if regions is not None and level is not None:
        raise InputError("give --regions or --level, not both")
    batch_options = BatchOptions(
        out_dir=out,
        save=_split_save(save),
        ucm_format=ucm_format,
        recursive=recursive,
        overwrite=overwrite,
        shard=parse_shard(shard) if shard else None,
        workers=workers,
    )
    segment_options = SegmentOptions(
        recipe=resolve_recipe(recipe, fast),
        cut=Cut(regions=regions, level=level),
        soft_maps="probs" in batch_options.save,
        boundary_map="boundaries" in batch_options.save,
        device=device,
        threads=threads,
        streams=streams,
        batch_size=batch_size,
        max_size=max_size or None,
    )
    try:
        report = _run_with_progress(inputs, model, batch_options, segment_options)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted:[/] the outputs written are complete (summary: "
            f"{escape(str(batch_options.summary_path))}); rerun the same command to finish",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    _print_report(report, model, segment_options.recipe.name)
    if report.failed:
        raise typer.Exit(1)


def _run_with_progress(inputs, model, batch_options, segment_options):
    from wnetcli.segmentation import segment_folder

    with progress_lines("segmenting") as progress:
        return segment_folder(inputs, model, batch_options, segment_options, progress=progress)


def _print_report(report, model: Path | None, recipe_name: str) -> None:
    from rich.table import Table

    from wnetcli.segmentation.batch import FAILED, OK, SKIPPED

    if report.device_note:
        console.print(f"[dim]{report.device_note}[/]", highlight=False)
    if not report.network_run and model is not None:
        console.print(escape(unused_model_note(model, recipe_name)), highlight=False, soft_wrap=True)
    ok = report.count(OK)
    table = Table(title=f"wnet segment ({report.device})", show_header=True)
    table.add_column("images")
    table.add_column("count", justify="right")
    for label, status in (("segmented", OK), ("skipped (done before)", SKIPPED), ("failed", FAILED)):
        table.add_row(label, str(report.count(status)))
    if ok:
        table.add_row("images / second", f"{ok / report.wall_seconds:.2f}")
    console.print(table)

    totals = report.stage_totals()
    if ok and totals:
        stages = Table(title="where the time went (summed over images; stages overlap)")
        stages.add_column("stage")
        stages.add_column("seconds", justify="right")
        stages.add_column("per image (ms)", justify="right")
        for stage, seconds in totals.items():
            stages.add_row(stage, f"{seconds:.2f}", f"{1000 * seconds / ok:.1f}")
        stages.add_row("wall clock", f"{report.wall_seconds:.2f}", "")
        console.print(stages)

    for record in report.failed[:_MAX_FAILURES_SHOWN]:
        # read errors already name the file; other reasons get the name in front
        text = (
            record.message if str(record.source) in record.message else f"{record.source}: {record.message}"
        )
        console.print(f"[red]failed:[/] {text}", highlight=False, soft_wrap=True)
    if len(report.failed) > _MAX_FAILURES_SHOWN:
        console.print(f"... and {len(report.failed) - _MAX_FAILURES_SHOWN} more", highlight=False)
    if report.made_otherwise:
        console.print(
            f"[yellow]warning:[/] {len(report.made_otherwise)} skipped image(s) were made earlier with other "
            "settings (summary.csv's settings column, runs.jsonl); --overwrite redoes them",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"summary: {report.summary_path}", highlight=False, soft_wrap=True)
    if report.merged_summary is not None:
        console.print(f"summary of all shards: {report.merged_summary}", highlight=False, soft_wrap=True)
