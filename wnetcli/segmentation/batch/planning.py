"""Planning a folder run: which images, this shard's share, and what is already done."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wnetcli.errors import InputError
from wnetcli.images import find_images
from wnetcli.options import check_field_types
from wnetcli.segmentation.batch.reporting import FAILED, SKIPPED, ImageRecord
from wnetcli.segmentation.outputs import EXTRA_KINDS, UCM_FORMATS, output_paths

__all__ = ["BatchOptions", "BatchPlan", "Job", "in_shard", "parse_shard", "plan_batch"]


@dataclass(frozen=True)
class BatchOptions:
    """Where and how a batch run writes.

    Attributes:
        out_dir: output folder; outputs mirror the inputs' relative paths (see
            :mod:`wnetcli.segmentation.outputs`).
        save: extra outputs, any of ``"overlay"``, ``"color"``, ``"ucm"``, ``"probs"``.
        ucm_format: ``"png"`` (16-bit) or ``"npy"`` (float32).
        recursive: descend into subfolders of input folders.
        overwrite: redo images whose outputs exist (otherwise they are skipped, so a rerun resumes).
        shard: ``(index, count)`` with ``0 <= index < count``: process only the inputs whose
            relative path hashes to ``index`` (:func:`in_shard`); ``None`` processes all.
        workers: post-processing processes, which run beside the inference; 0 runs everything
            in the calling process, one step after the other (no overlap, no start-up cost);
            ``None``: :func:`resolve_workers`, one per CPU core up to :data:`MAX_AUTO_WORKERS`
            (the post-processing takes several times the inference's time, so it is what
            needs the cores), none for a single image.
        prefetch: images decoded ahead of the network.
    """

    out_dir: Path
    save: tuple[str, ...] = ()
    ucm_format: str = "png"
    recursive: bool = False
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    workers: int | None = None
    prefetch: int = 4

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.ucm_format not in UCM_FORMATS:
            raise InputError(f"ucm_format must be one of {', '.join(UCM_FORMATS)}, got {self.ucm_format!r}")
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 0 <= index < count:
                raise InputError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        if (self.workers is not None and self.workers < 0) or self.prefetch < 1:
            raise InputError(f"workers must be >= 0 and prefetch >= 1, got {self.workers}, {self.prefetch}")

    @property
    def summary_path(self) -> Path:
        """``summary.csv``, or ``summary.shard-I-of-N.csv`` so that shards never overwrite each other."""
        if self.shard is None:
            return Path(self.out_dir) / "summary.csv"
        return Path(self.out_dir) / f"summary.shard-{self.shard[0]}-of-{self.shard[1]}.csv"


@dataclass(frozen=True)
class Job:
    """One image to segment: its source, relative path, the output files to write, and the
    files an earlier run wrote for it that this one does not (removed once it is redone)."""

    source: Path
    relative: Path
    paths: dict[str, Path]
    stale: tuple[Path, ...] = ()


@dataclass
class BatchPlan:
    """The outcome of :func:`plan_batch`: jobs to run and records decided without running.

    Attributes:
        jobs, decided: this shard's images to segment, and its skipped or clashing ones.
        found: every input image's relative path (POSIX), of all shards.
    """

    jobs: list[Job]
    decided: list[ImageRecord]
    found: list[str]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (0 <= I < N) into ``(I, N)``; raise :class:`InputError` otherwise."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise InputError(f"--shard must look like I/N (for example 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return index, count


def in_shard(relative: Path, shard: tuple[int, int] | None) -> bool:
    """True when ``relative`` belongs to ``shard`` = (index, count).

    A CRC-32 of the relative POSIX path: stable across machines, Python versions and
    listing order, so N jobs that each list the inputs split them with no coordination, and
    a file added later does not move the others to another shard.
    """
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(Path(relative).as_posix().encode("utf-8")) % count == index


def plan_batch(inputs: Sequence[str | Path], options: BatchOptions) -> BatchPlan:
    """List the images to segment: this shard's share, minus those already done.

    An image is done when every output it would get exists (the label map is written last,
    so its presence means the others are complete); ``options.overwrite`` redoes it. Two
    inputs that would write the same output file (``a.jpg`` and ``a.png``) clash: the
    second is recorded as failed rather than silently overwriting the first.

    Raises
    ------
    InputError
        When an input path does not exist, or no image is found at all.
    """
    # The output folder, when it lies inside an input folder, holds this tool's own PNGs.
    found = find_images(inputs, recursive=options.recursive, exclude=[options.out_dir])
    if not found:
        hint = "" if options.recursive else " (add --recursive to descend into subfolders)"
        names = ", ".join(str(p) for p in inputs)
        raise InputError(f"no images found in {names}{hint}")
    jobs: list[Job] = []
    decided: list[ImageRecord] = []
    owners: dict[Path, Path] = {}
    for source, relative in found:
        if not in_shard(relative, options.shard):
            continue
        paths = output_paths(options.out_dir, relative, options.save, ucm_format=options.ucm_format)
        owner = owners.setdefault(paths["labels"], source)
        if owner != source:
            message = f"its output {paths['labels'].name} is also the output of {owner}; rename one of them"
            decided.append(ImageRecord(relative.as_posix(), source, FAILED, message=message))
            continue
        missing = paths if options.overwrite else {k: p for k, p in paths.items() if not p.exists()}
        if not missing:
            decided.append(ImageRecord(relative.as_posix(), source, SKIPPED))
            continue
        stale = tuple(path for path in _every_output(options.out_dir, relative) - set(paths.values()) if path.exists())
        jobs.append(Job(source, relative, missing, stale if options.overwrite else ()))
    return BatchPlan(jobs=jobs, decided=decided, found=[relative.as_posix() for _, relative in found])


def _every_output(out_dir: Path, relative: Path) -> set[Path]:
    """Every file ``wnet segment`` can write for the input ``relative`` (all kinds, both ucm formats)."""
    return {
        path
        for ucm_format in UCM_FORMATS
        for path in output_paths(out_dir, relative, EXTRA_KINDS, ucm_format=ucm_format).values()
    }
