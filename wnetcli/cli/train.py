"""``wnet train``: train a W-Net (needs the ``train`` extra; torch is imported inside the command)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer

from wnetcli.cli import command, console, milestones


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


@command("train")
def train(
    data: list[Path] = typer.Option(
        ..., "--data", help="Folder of images (searched recursively) or a VOC tree; repeat to use several."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config.json, last.pt, log.jsonl, samples/."),
    preset: str = typer.Option("small", "--preset", help="paper (224 px, batch 10, full width) or small (CPU)."),
    config_file: Path | None = typer.Option(None, "--config", help="JSON or TOML file of settings (over the preset)."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="Minibatches in the whole run."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", min=1, help="Images per minibatch."),
    size: int | None = typer.Option(None, "--size", min=8, help="Side of the random square crops (pixels)."),
    k: int | None = typer.Option(None, "--k", min=2, help="Number of classes K."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Initial learning rate."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="sgd or adam."),
    width: int | None = typer.Option(None, "--width", min=1, help="Base width (channels of the first module)."),
    max_side: int | None = typer.Option(
        None, "--max-side", min=0, help="Downscale images so their shorter side is at most this (0: never)."
    ),
    ncut_weight: float | None = typer.Option(
        None, "--ncut-weight", min=0.0, help="Learning-rate factor of the soft N-cut update."
    ),
    recon_weight: float | None = typer.Option(
        None, "--recon-weight", min=0.0,
        help="Learning-rate factor of the reconstruction update (raise it if N-cut takes over).",
    ),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Seed of the weights, data and dropout."),
    padding: str | None = typer.Option(
        None, "--padding", help="Convolution padding: zeros (the paper) or reflect (hides the image border)."
    ),
    init_from: Path | None = typer.Option(
        None, "--init-from",
        help="Start from this checkpoint's weights, or an exported .onnx's encoder (fine-tuning; fresh optimizers, "
        "step 0).",
    ),
    boundaries_from: str | None = typer.Option(
        None, "--boundaries-from",
        help="Train a boundary head on this teacher recipe's hierarchy (default, fast, network, boundaries "
        "or a recipe file); adds the head and --boundary-weight 1 unless the config sets them.",
    ),
    teacher_model: Path | None = typer.Option(
        None, "--teacher-model",
        help="Exported model (.onnx) for a teacher recipe that reads the network (a later round of "
        "self-training); default: the shipped model the recipe names.",
    ),
    boundary_weight: float | None = typer.Option(
        None, "--boundary-weight", min=0.0, help="Learning-rate factor of the boundary update (0: none)."
    ),
    teacher_cache: Path | None = typer.Option(
        None, "--teacher-cache", help="Folder of cached teacher targets (default: ~/.cache/wnet/teacher)."
    ),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", min=0, help="Save last.pt every N steps."),
    sample_every: int | None = typer.Option(None, "--sample-every", min=0, help="Write a sample sheet every N steps."),
    workers: int | None = typer.Option(None, "--workers", min=0, help="Data-loading processes (large data sets)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu or cuda."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (default: all cores)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    stop_after: int | None = typer.Option(
        None, "--stop-after", min=1, help="Stop after N steps in this session (resume later)."
    ),
) -> None:
    """Train a W-Net on unlabelled images (the paper's Algorithm 1), resumable with --resume.

    Settings come from --preset, then --config, then the flags; the resolved config is saved as
    RUN_DIR/config.json. With --resume the run's own config is used and only the flags given
    change it (typically --iterations). Runs under torchrun for several GPUs or machines.

    With --boundaries-from, each step also trains a boundary head on the teacher hierarchy's
    boundaries, computed once per image before the first step and cached.
    """
    from wnetcli.errors import InputError, require_torch

    require_torch()
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from training.config import PADDING_MODES, resolve_train_config
    from training.trainer import load_run_config
    from training.trainer import train as train_wnet

    overrides = {
        "iterations": iterations, "batch_size": batch_size, "size": size, "k": k, "base_width": width,
        "max_side": max_side, "lr": lr, "optimizer": optimizer,
        "ncut_weight": ncut_weight, "recon_weight": recon_weight, "seed": seed, "checkpoint_every": checkpoint_every,
        "sample_every": sample_every, "workers": workers, "padding_mode": padding,
        "init_from": None if init_from is None else str(init_from),
        "boundaries_from": boundaries_from, "boundary_weight": boundary_weight,
        "teacher_model": str(teacher_model) if teacher_model else None,
    }
    if padding is not None and padding not in PADDING_MODES:  # the config's own message names padding_mode
        raise InputError(f"--padding must be one of {', '.join(PADDING_MODES)}, got {padding!r}")
    if resume and config_file is not None:
        raise InputError("--resume uses the run's own config; give flags such as --iterations instead of --config")
    config = load_run_config(out, overrides) if resume else resolve_train_config(preset, config_file, overrides)

    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    )
    boundaries = config.boundary_weight > 0

    def losses(metrics: dict | None) -> str:
        metrics = metrics or {}
        shown = [("ncut", "ncut"), ("recon", "recon")] + ([("boundary", "boundary")] if boundaries else [])
        return ", ".join(f"{label} {_fmt(metrics.get(key))}" for label, key in shown)
    # Under torchrun only rank 0 reports; the other processes train silently.
    main_process = os.environ.get("RANK", "0") == "0"
    # Outside a terminal (a log file, nohup, a cluster job) a bar cannot redraw: it would show
    # only its last state, after the run. There a plain line every 5% of the run says how far
    # it is instead (log.jsonl has every logged step).
    in_terminal = console.is_terminal
    line_due = milestones(first=max(1, config.iterations // 20))
    with Progress(*columns, console=console, transient=False, disable=not (main_process and in_terminal)) as bar:
        task = bar.add_task("training", total=config.iterations, losses=losses(None))
        teacher_task = None
        teacher_line_due = milestones()

        def on_teacher(done: int, total: int) -> None:
            nonlocal teacher_task
            if teacher_task is None:
                teacher_task = bar.add_task("teacher", total=total, losses="", visible=in_terminal)
            bar.update(teacher_task, completed=done)
            if main_process and not in_terminal and teacher_line_due(done, total):
                console.print(f"teacher: {done}/{total}", highlight=False)

        def on_start(info: dict) -> None:
            source = "in memory" if info["in_memory"] else "streamed"
            where = f" x {info['world_size']} processes" if info["world_size"] > 1 else ""
            bar.console.print(
                f"run [bold]{escape(str(out))}[/]: {info['images']} images ({source}), device {info['device']}{where}, "
                f"{info['parameters']:,} parameters, K={config.model.k}, {config.size} px, batch {config.batch_size}"
                + (f", resuming at step {info['start_step']}" if info["start_step"] else ""),
                highlight=False,
                soft_wrap=True,
            )
            bar.update(task, completed=info["start_step"])

        def on_metrics(metrics: dict) -> None:
            bar.update(task, completed=metrics["step"], losses=f"{losses(metrics)}, lr {metrics['lr']:.2g}")
            if main_process and not in_terminal and line_due(metrics["step"], config.iterations):
                console.print(
                    f"step {metrics['step']}/{config.iterations}: {losses(metrics)}, lr {metrics['lr']:.2g}",
                    highlight=False,
                )

        def warn(message: str) -> None:
            bar.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

        try:
            result = train_wnet(
                config, data, out, resume=resume, device=device, threads=threads, stop_after=stop_after,
                on_metrics=on_metrics, on_start=on_start, warn=warn, teacher_cache=teacher_cache, on_teacher=on_teacher,
            )
        except KeyboardInterrupt:
            result = None  # reported below, once the progress bar has drawn its last state
    if result is None:
        if main_process and (out / "last.pt").exists():
            console.print(
                f"[yellow]interrupted:[/] checkpoint saved in {escape(str(out / 'last.pt'))}; continue with --resume",
                soft_wrap=True,
            )
        elif main_process:  # before the first step: while loading images or computing the teacher's targets
            console.print("[yellow]interrupted[/] before the first step (teacher targets computed so far are cached)",
                          soft_wrap=True)
        raise typer.Exit(130)
    if not main_process:
        return
    if result.step < result.iterations:
        console.print(f"stopped at step {result.step} of {result.iterations}; continue with --resume", soft_wrap=True)
    console.print(
        f"[green]done:[/] step {result.step}, {losses(result.last)}; checkpoint {escape(str(result.checkpoint))}",
        highlight=False,
        soft_wrap=True,
    )
