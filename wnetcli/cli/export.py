"""``wnet export``: training checkpoint -> the self-describing ONNX encoder ``wnet segment`` runs."""

from __future__ import annotations

from pathlib import Path

import typer

from wnetcli.cli import command, console, transient_progress


@command("export")
def export(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (.pt) from `wnet train`.", show_default=False),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output .onnx file (default: beside the checkpoint, same stem)."
    ),
    opset: int | None = typer.Option(
        None, "--opset", help="ONNX opset (default: the newest both torch's exporter and onnxruntime support)."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="Float16 weights, compute, input and output (for GPUs)."),
    exporter: str = typer.Option(
        "torchscript", "--exporter", help="torch exporter: torchscript (faster export, as fast a graph) or dynamo."
    ),
    short_side: int | None = typer.Option(
        None, "--short-side", min=0,
        help="Run the network on images shrunk to this shorter side (default: the training scale; 0: native).",
    ),
    tolerance: float | None = typer.Option(
        None, "--tolerance",
        help="Largest accepted |onnxruntime - PyTorch| probability difference, in (0, 1) "
        "(default 1e-4; 1e-2 with --fp16).",
    ),
) -> None:
    """Export the encoder of CHECKPOINT to ONNX, then check it against PyTorch.

    The graph maps RGB 0..255 (N, 3, H, W) to softmax probabilities (N, K, H, W), and, for a
    model trained with boundaries (a boundary head), to a boundary map (N, 1, H, W) in [0, 1].

    K, the padding multiple and the checkpoint's provenance are stored in the file.

    Nothing is written if onnxruntime and PyTorch differ by more than --tolerance (default
    1e-4, 1e-2 with --fp16).
    """
    from rich.table import Table

    from wnetcli.errors import require_torch

    require_torch()
    from export import ExportOptions, export_onnx

    options = ExportOptions(
        opset=opset, fp16=fp16, exporter=exporter.lower(), short_side=short_side, tolerance=tolerance
    )
    with transient_progress() as bar:
        task = bar.add_task("exporting", total=None)
        result = export_onnx(
            checkpoint, out, options=options, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )

    table = Table(title=f"exported {result.path}", show_header=False, title_justify="left")
    table.add_row("K / pad multiple", f"{result.info.k} / {result.info.pad_multiple}")
    table.add_row("outputs", ", ".join(result.info.outputs))
    table.add_row("exporter / opset", f"{result.exporter} / {result.opset}")
    table.add_row("precision", "float16" if result.fp16 else "float32")
    table.add_row("checkpoint step / SHA-256", f"{result.info.step} / {result.info.checkpoint_sha256[:16]}...")
    table.add_row("network scale", f"shorter side {result.info.short_side} px" if result.info.short_side else "native")
    for size, diff in result.max_abs_diff.items():
        table.add_row(f"max |ort - torch| {size}", f"{diff:.2e} (limit {result.tolerance:g})")
    table.add_row("time", f"{result.seconds:.1f} s")
    console.print(table)
