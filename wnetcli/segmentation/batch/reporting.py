"""What a folder run reports and records: one record per image, ``summary.csv``, the shards'
merged summary, and ``runs.jsonl``, the settings of every run appended."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wnetcli.atomic import LineLog, atomic_write_text
from wnetcli.model_info import file_sha256

if TYPE_CHECKING:
    from wnetcli.segmentation.batch.planning import BatchOptions
    from wnetcli.segmentation.pipeline import Segmenter

__all__ = [
    "FAILED",
    "OK",
    "RUNS_NAME",
    "SKIPPED",
    "SUMMARY_FIELDS",
    "BatchReport",
    "ImageRecord",
    "merge_shard_summaries",
    "read_summary",
    "record_run",
    "run_settings",
    "settings_id",
    "write_summary",
]

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
# "source": the input file, which tells apart two inputs of the same relative name; "settings":
# the settings that made the image's outputs (an id of RUNS_NAME).
SUMMARY_FIELDS = ("image", "width", "height", "regions", "seconds", "status", "message", "source", "settings")
#: The file of the output folder to which every run appends its settings, one JSON line each.
RUNS_NAME = "runs.jsonl"


@dataclass
class ImageRecord:
    """What happened to one input image (one row of ``summary.csv``).

    Attributes:
        image: the input's path relative to its input folder (as a POSIX string).
        source: the input file.
        status: ``"ok"``, ``"skipped"`` (outputs existed) or ``"failed"``.
        width, height: input size in pixels (0 when unknown).
        regions: regions in the label map (0 when not computed).
        seconds: this image's decode + inference + post-processing + write time.
        message: the reason of a failure; for an image done, a note (fewer regions than asked
            for), else ``""``.
        timings: seconds per stage (``decode``, ``inference``, ``crf``, ``boundaries``,
            ``hierarchy``, ``write``).
        settings: the id of the settings that made this image's outputs (:func:`settings_id`;
            its line in ``runs.jsonl``): this run's for an image done, the earlier run's for
            one skipped (``""`` when unknown).
    """

    image: str
    source: Path
    status: str
    width: int = 0
    height: int = 0
    regions: int = 0
    seconds: float = 0.0
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    settings: str = ""


@dataclass
class BatchReport:
    """Result of :func:`segment_folder`.

    Attributes:
        records: one per input of this shard, in input order.
        summary_path: the ``summary.csv`` written.
        wall_seconds: elapsed time of the whole run (model loading included).
        device: ``"cpu"`` or ``"cuda"``; device_note: a quiet line about the device choice.
        found: inputs found before sharding.
        network_run: False when the settings read none of the network's output, so that it
            was not run (:attr:`Segmenter.runs_network`).
        settings: the id of this run's settings (:func:`settings_id`), in ``runs.jsonl``.
        made_otherwise: the skipped images whose outputs an earlier run made with other
            settings (``--overwrite`` redoes them).
        merged_summary: the shards' summaries merged into ``summary.csv`` by the last shard to
            finish, or ``None`` (no shards, or some shard not done yet).
    """

    records: list[ImageRecord]
    summary_path: Path
    wall_seconds: float
    device: str
    device_note: str
    found: int
    network_run: bool = True
    settings: str = ""
    made_otherwise: list[str] = field(default_factory=list)
    merged_summary: Path | None = None

    def count(self, status: str) -> int:
        """Number of records with ``status``."""
        return sum(record.status == status for record in self.records)

    @property
    def failed(self) -> list[ImageRecord]:
        """The records of images that failed."""
        return [record for record in self.records if record.status == FAILED]

    def stage_totals(self) -> dict[str, float]:
        """Seconds per stage summed over the processed images (stages overlap in wall time)."""
        totals: dict[str, float] = {}
        for record in self.records:
            for stage, seconds in record.timings.items():
                totals[stage] = totals.get(stage, 0.0) + seconds
        return totals


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier ``summary.csv`` by image (empty if there is none or it is unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["image"]: row for row in csv.DictReader(handle) if row.get("image")}
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}


def with_earlier_rows(records: list[ImageRecord], earlier: dict[str, dict[str, str]]) -> list[ImageRecord]:
    """Skipped images keep the size, region count and settings that the run which made them recorded."""
    for record in records:
        row = earlier.get(record.image)
        if record.status != SKIPPED or row is None or row.get("status") not in (OK, SKIPPED):
            continue
        record.settings = row.get("settings") or ""
        try:
            record.width, record.height, record.regions = (int(row[k]) for k in ("width", "height", "regions"))
        except (KeyError, TypeError, ValueError):  # a hand-edited or foreign file: leave the zeros
            continue
    return records


def write_summary(path: Path, records: Iterable[ImageRecord]) -> None:
    """Write ``summary.csv`` (one row per image: size, regions, seconds, status, settings) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_FIELDS)
    for r in records:
        writer.writerow(
            [r.image, r.width, r.height, r.regions, f"{r.seconds:.4f}", r.status, r.message, r.source, r.settings]
        )
    atomic_write_text(path, buffer.getvalue())


def merge_shard_summaries(out_dir: Path, shards: int, images: Iterable[str]) -> Path | None:
    """Merge ``summary.shard-I-of-N.csv`` (I = 0..N-1) of ``out_dir`` into ``summary.csv``
    once they list every one of ``images`` (relative POSIX paths, all shards'); else ``None``.

    Each shard calls this when it has finished: the last one to finish finds every image
    listed and writes the merged file (two finishing together write the same rows).
    """
    rows: dict[str, dict[str, str]] = {}
    for index in range(shards):
        rows.update(read_summary(Path(out_dir) / f"summary.shard-{index}-of-{shards}.csv"))
    if not set(images) <= set(rows):
        return None
    path = Path(out_dir) / "summary.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, SUMMARY_FIELDS, lineterminator="\n", extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows[image] for image in sorted(rows))
    atomic_write_text(path, buffer.getvalue())
    return path


def settings_id(settings: dict) -> str:
    """A short id of the settings that decide what a run writes for an image (12 hex digits of
    the SHA-256 of their canonical JSON): runs with equal settings share it."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def run_settings(segmenter: Segmenter) -> dict:
    """What decides an image's outputs: the recipe (its name aside), the cut, the size the
    image is processed at and, when the network runs, the model (its SHA-256)."""
    from wnetcli.segmentation.recipe import recipe_to_dict

    options = segmenter.options
    recipe = {key: value for key, value in recipe_to_dict(options.recipe).items() if key != "name"}
    return {
        "recipe": recipe,
        "cut": asdict(options.cut),
        "max_size": options.max_size,
        "model": file_sha256(segmenter.model_path) if segmenter.runs_network else None,
    }


def record_run(segmenter: Segmenter, options: BatchOptions) -> str:
    """Append this run's settings to ``runs.jsonl`` in the output folder; return their id.

    One JSON object per line, appended, never rewritten: ``settings`` (the id that
    ``summary.csv`` gives each image), ``time``, ``version``, ``recipe`` (with the keys of a
    recipe file, :func:`wnetcli.segmentation.recipe.recipe_to_dict`), ``cut``, ``max_size``,
    ``model``, ``model_sha256`` and ``model_info`` (when the network runs), ``network_run``,
    ``device``, ``runtime`` (threads, streams, batch size), ``save``, ``ucm_format``, ``shard``.
    """
    from datetime import datetime, timezone

    from wnetcli import __version__

    settings = run_settings(segmenter)
    identity = settings_id(settings)
    runtime = ("device", "threads", "streams", "batch_size", "spinning", "soft_maps", "boundary_map")
    entry = {
        "settings": identity,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "recipe": {"name": segmenter.recipe.name, **settings["recipe"]},
        "cut": settings["cut"],
        "max_size": settings["max_size"],
        "model": str(segmenter.model_path),
        "model_sha256": settings["model"],
        # Without the network run the model is neither loaded nor read: nothing to describe.
        "model_info": asdict(segmenter.info) if segmenter.runs_network else None,
        "network_run": segmenter.runs_network,
        "device": segmenter.device,
        "runtime": {key: getattr(segmenter.options, key) for key in runtime},
        "save": list(options.save),
        "ucm_format": options.ucm_format,
        "shard": list(options.shard) if options.shard else None,
    }
    with LineLog(Path(options.out_dir) / RUNS_NAME) as runs:
        runs.write_line(json.dumps(entry, default=str))
    return identity
