"""Resumable, sharded batch segmentation of files and folders (the library under ``wnet segment``).

:func:`segment_folder` plans the run (:mod:`.planning`: the inputs, this shard's share, the
images already done), runs it (:mod:`.running`: decoding, inference and post-processing
overlapped) and reports it (:mod:`.reporting`: ``summary.csv``, ``runs.jsonl``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from wnetcli.atomic import prepare_folder, remove_stale_temporaries
from wnetcli.segmentation.batch.planning import BatchOptions, BatchPlan, Job, in_shard, parse_shard, plan_batch
from wnetcli.segmentation.batch.reporting import (
    FAILED,
    OK,
    SKIPPED,
    BatchReport,
    ImageRecord,
    merge_shard_summaries,
    read_summary,
    record_run,
    with_earlier_rows,
    write_summary,
)
from wnetcli.segmentation.batch.running import ProgressCallback, resolve_workers, run_jobs, start_worker_server
from wnetcli.segmentation.pipeline import Segmenter, SegmentOptions, folder_options
from wnetcli.tuning import tune_malloc

__all__ = [
    "FAILED",
    "OK",
    "SKIPPED",
    "BatchOptions",
    "BatchPlan",
    "BatchReport",
    "ImageRecord",
    "Job",
    "in_shard",
    "parse_shard",
    "plan_batch",
    "segment_folder",
]


def segment_folder(
    inputs: str | Path | Sequence[str | Path],
    model_path: Path | None,
    options: BatchOptions,
    segment_options: SegmentOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> BatchReport:
    """Segment every image in ``inputs`` (files and/or folders) into ``options.out_dir``.

    Parameters
    ----------
    inputs : path or sequence of paths
        Image files and folders (folders are searched as :func:`wnetcli.images.find_images` does).
    model_path : Path or None
        The exported ``.onnx`` model; ``None`` for the shipped default.
    options : BatchOptions
    segment_options : SegmentOptions, optional
    progress : callable (done, total), optional

    Returns
    -------
    BatchReport
        Per-image records (also written to ``options.summary_path``).

    Raises
    ------
    InputError
        A missing input, no image at all, or an output folder that cannot be written.
    ModelError
        A missing or invalid model.
    WNetError
        A worker process ended abruptly. In a script, call this under
        ``if __name__ == "__main__":``: the worker processes import the script again.
    """
    began = time.perf_counter()
    tune_malloc()
    if isinstance(inputs, (str, os.PathLike)):  # one path, not a sequence of characters
        inputs = [inputs]
    plan = plan_batch(inputs, options)
    segment_options = segment_options or SegmentOptions()
    # Outputs that make the network run.
    if "probs" in options.save and not segment_options.soft_maps:
        segment_options = replace(segment_options, soft_maps=True)
    if "boundaries" in options.save and not segment_options.boundary_map:
        segment_options = replace(segment_options, boundary_map=True)
    if resolve_workers(options.workers, len(plan.jobs)):
        # Inference overlaps the post-processing: several calls at once, and the workers' fork
        # server starting now, while the model loads.
        segment_options = folder_options(segment_options)
        start_worker_server()
    segmenter = Segmenter(model_path, segment_options)  # a broken model fails before anything is written
    prepare_folder(options.out_dir)
    # What a killed run was writing when it died: the outputs this run is about to redo.
    remove_stale_temporaries(path for job in plan.jobs for path in job.paths.values())
    settings = record_run(segmenter, options)
    earlier = read_summary(options.summary_path)
    ran: list[ImageRecord] = []
    interrupted = True
    try:
        run_jobs(segmenter, plan.jobs, options, progress, settled=ran.append)
        interrupted = False
    finally:
        # Also when interrupted: the summary then lists the images done so far.
        for record in ran:
            if record.status == OK:
                record.settings = settings
        records = with_earlier_rows(sorted([*plan.decided, *ran], key=lambda record: record.image), earlier)
        write_summary(options.summary_path, records)
    merged = None
    if options.shard is not None and not interrupted:
        merged = merge_shard_summaries(options.out_dir, options.shard[1], plan.found)
    made_otherwise = [r.image for r in records if r.status == SKIPPED and r.settings not in ("", settings)]
    return BatchReport(
        records=records,
        summary_path=options.summary_path,
        wall_seconds=time.perf_counter() - began,
        device=segmenter.device,
        device_note=segmenter.device_note,
        found=len(plan.found),
        network_run=segmenter.runs_network,
        settings=settings,
        made_otherwise=made_otherwise,
        merged_summary=merged,
    )
