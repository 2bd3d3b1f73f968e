"""Resumable, sharded batch segmentation of files and folders (the library under ``wnet segment``).

:func:`plan_batch` lists the inputs, keeps this shard's share, and skips images whose outputs
all exist; :func:`segment_folder` runs the rest and writes ``summary.csv``.

Overlap: a decoding thread reads images ahead, the calling process runs the network, and a
pool of post-processing worker processes runs the CRF and hierarchy and writes the files, so
the CPU is busy while the model runs. The number of images in flight is bounded, so memory
does not grow with the folder size.

A failure of one image (unreadable file, odd contents) is recorded with its reason and the
batch goes on; the caller decides the exit code from :attr:`BatchReport.failed`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wnetcli.atomic import LineLog, atomic_write_text, prepare_folder, remove_stale_temporaries
from wnetcli.errors import InputError, OutputError, WNetError
from wnetcli.images import find_images, read_rgb
from wnetcli.options import check_field_types
from wnetcli.segmentation.outputs import EXTRA_KINDS, UCM_FORMATS, output_paths, write_outputs
from wnetcli.segmentation.pipeline import Finisher, Segmenter, SegmentOptions, folder_options, inference_size
from wnetcli.tuning import single_threaded_blas, tune_malloc
from wnetcli.workers import deferred_interrupts, serve_run, signal_handlers

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
# "source": the input file, which tells apart two inputs of the same relative name; "settings":
# the settings that made the image's outputs (an id of RUNS_NAME).
SUMMARY_FIELDS = ("image", "width", "height", "regions", "seconds", "status", "message", "source", "settings")
#: The file of the output folder to which every run appends its settings, one JSON line each.
RUNS_NAME = "runs.jsonl"
ProgressCallback = Callable[[int, int], None]
#: Cap of the automatic number of post-processing processes (each holds its own arrays).
MAX_AUTO_WORKERS = 8


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


def _describe(exc: BaseException) -> str:
    """One line for a failed image: the message of a wnet error, else the exception type too."""
    from wnetcli.errors import WNetError

    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, WNetError) else f"{type(exc).__name__}: {text}"


def _decode(job: Job) -> tuple[np.ndarray, float]:
    began = time.perf_counter()
    rgb = read_rgb(job.source)
    return rgb, time.perf_counter() - began


def _decoded(
    jobs: Sequence[Job], pool: ThreadPoolExecutor | None, window: int
) -> Iterator[tuple[int, Job, np.ndarray | None, float, BaseException | None]]:
    """Yield ``(index, job, rgb, decode_seconds, error)`` in order, decoding up to ``window`` ahead."""
    pending: deque[tuple[int, Job, Future | None]] = deque()
    upcoming = iter(enumerate(jobs))

    def fill() -> None:
        while len(pending) < window:
            nxt = next(upcoming, None)
            if nxt is None:
                return
            index, job = nxt
            pending.append((index, job, pool.submit(_decode, job) if pool else None))

    fill()
    while pending:
        index, job, future = pending.popleft()
        fill()
        try:
            rgb, seconds = future.result() if future is not None else _decode(job)
        except Exception as exc:  # any reason a file cannot be read is that file's failure
            yield index, job, None, 0.0, exc
        else:
            yield index, job, rgb, seconds, None


def _finish(finisher: Finisher, job: Job, rgb: np.ndarray, probs: np.ndarray, timings: dict) -> ImageRecord:
    """Post-process and write one image; a failure becomes the record, except a full disk.

    Raises
    ------
    OutputError
        When the output's storage is full, over quota or read-only (:attr:`OutputError.no_room`):
        every later image would fail the same way, so the batch stops instead.
    """
    height, width = rgb.shape[:2]
    record = ImageRecord(job.relative.as_posix(), job.source, OK, width=width, height=height)
    try:
        result = finisher(rgb, probs, timings.pop("inference", 0.0))
        began = time.perf_counter()
        write_outputs(job.paths, rgb, result)
        for path in job.stale:  # an earlier run's extras, which would not match the new outputs
            path.unlink(missing_ok=True)
        record.timings = {**timings, **result.timings, "write": time.perf_counter() - began}
        record.regions = result.regions
        record.message = result.note
    except Exception as exc:  # an odd image must not stop the batch; a full disk must
        if isinstance(exc, OutputError) and exc.no_room:
            raise
        record.status, record.message = FAILED, _describe(exc)
        record.timings = timings
    record.seconds = sum(record.timings.values())
    return record


# --- the post-processing worker processes ---
# Processes, not threads: the post-processing is NumPy / SciPy / scikit-image code that holds
# the GIL much of the time; one post-processing thread beside the inference was slower than
# no overlap at all (0.52 against 0.44 s per BSDS image, 8 images, one run on 2 shared cores).

_worker_finisher: Finisher | None = None


_worker_blas_limit = None


def _init_worker(finisher: Finisher, run_pid: int) -> None:
    global _worker_finisher, _worker_blas_limit
    _worker_finisher = finisher
    _worker_blas_limit = single_threaded_blas()  # see wnetcli.tuning: kept for the worker's life
    serve_run(run_pid)


def _finish_in_worker(job: Job, rgb: np.ndarray, probs: np.ndarray, timings: dict) -> ImageRecord:
    return _finish(_worker_finisher, job, rgb, probs, timings)


#: What the fork server imports once for all the workers: the post-processing and the parts of
#: SciPy and scikit-image it uses (the post-processing modules import those where they are used).
_WORKER_PRELOAD = [
    "wnetcli.segmentation.batch", "wnetcli.segmentation.postprocess", "scipy.ndimage", "scipy.sparse",
    "skimage.color", "skimage.measure", "skimage.segmentation",
]


def _worker_context():
    """``forkserver`` where available: the workers are forked from a clean server process, not
    from this one, whose onnxruntime threads make ``fork`` unsafe; the server imports
    :data:`_WORKER_PRELOAD` once, so each worker starts without re-importing them."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(_WORKER_PRELOAD)
    return context


def start_worker_server() -> None:
    """Start the fork server now, so that its imports (about 0.6 s) run while this process
    loads the model and decodes, rather than after the first inference. Without forkserver
    (spawn) there is no server and nothing to do; a server already running is kept.

    The server starts with SIGTERM ignored: a SIGTERM to the whole job (SLURM's time limit)
    ended it, and its end closes the pipes through which the pool learns that a worker has
    exited, so the pool took its live workers for dead and dropped the results of the images
    under way (written, but missing from ``summary.csv``). An ignored signal stays ignored across
    the server's exec; it ends anyway when this process does. The workers ignore SIGTERM too
    (:func:`wnetcli.workers.serve_run`).
    """
    if _worker_context().get_start_method() == "forkserver":
        import signal
        from multiprocessing import forkserver

        with signal_handlers((signal.SIGTERM,), signal.SIG_IGN):
            forkserver.ensure_running()


def _start_workers(finisher: Finisher, workers: int):
    """A pool of ``workers`` processes ready to run :func:`_finish_in_worker` (see :func:`_worker_context`)."""
    start_worker_server()  # started here if not before, with its signals set
    # ProcessPoolExecutor rather than multiprocessing.Pool: a worker that dies (say, killed for
    # memory) breaks the pool with an error instead of leaving its task waiting forever.
    return ProcessPoolExecutor(
        workers, mp_context=_worker_context(), initializer=_init_worker, initargs=(finisher, os.getpid())
    )


def resolve_workers(requested: int | None, jobs: int) -> int:
    """The post-processing processes of a run of ``jobs`` images: ``requested``, or by default
    one per CPU core up to :data:`MAX_AUTO_WORKERS`; never more than the images (a resumed run
    with little left starts few processes). By default a single image gets none: there is
    nothing to overlap it with, and starting a worker took longer than it saves (one BSDS image,
    whole command: 1.52 s with no worker against 2.65 s with one, benchmarks/bench_startup.py,
    before the fork server started early)."""
    if requested is None:
        requested = min(os.cpu_count() or 1, MAX_AUTO_WORKERS) if jobs > 1 else 0
    return min(requested, jobs)


def run_jobs(
    segmenter: Segmenter,
    jobs: Sequence[Job],
    options: BatchOptions,
    progress: ProgressCallback | None = None,
    settled: Callable[[ImageRecord], None] | None = None,
) -> list[ImageRecord]:
    """Segment ``jobs`` with decoding, inference and post-processing overlapped.

    Returns one :class:`ImageRecord` per job, in order. ``progress(done, total)`` is called
    from the calling thread after each image, and ``settled(record)`` just before it, so that
    a caller interrupted midway (Ctrl-C) still has the records of the images done.

    Raises
    ------
    OutputError
        On a full disk, an exhausted quota or a read-only output (see :func:`_finish`): the run
        stops at the first such image; the images written before it stay, and were settled.
    """
    records: list[ImageRecord | None] = [None] * len(jobs)
    done = 0

    def settle(index: int, record: ImageRecord) -> None:
        nonlocal done
        if records[index] is not None:  # settled before an interrupt, found again after it
            return
        records[index] = record
        done += 1
        if settled is not None:
            settled(record)
        if progress is not None:
            progress(done, len(jobs))

    workers = resolve_workers(options.workers, len(jobs))
    blas_limit = single_threaded_blas()  # for the post-processing done here (workers=0); restored below
    decode_pool = ThreadPoolExecutor(1, thread_name_prefix="wnet-decode") if workers else None
    post_pool = _start_workers(segmenter.finisher, workers) if workers else None
    # With workers, inference runs in `streams` threads (onnxruntime releases the GIL), each
    # call on its own images, while this thread decodes and collects; without, all runs here.
    streams = segmenter.streams if workers else 0
    infer_pool = ThreadPoolExecutor(streams, thread_name_prefix="wnet-infer") if streams else None
    # Oldest first: futures of an inference call's [(index, record or post-processing future)].
    in_flight: deque[Future] = deque()
    # Decoded images wait in one bucket per inference size, so that a batch is full even when
    # sizes alternate (BSDS has landscape and portrait images); a bucket is run when it holds
    # batch_size images, and the fullest one when more than 2 * batch_size images wait in all.
    buckets: dict[tuple[int, int], list[tuple[int, Job, np.ndarray, float]]] = {}
    batch_size = segmenter.options.batch_size

    def settle_all(outcomes: list[tuple[int, ImageRecord | Future]]) -> None:
        for index, outcome in outcomes:
            settle(index, outcome.result() if isinstance(outcome, Future) else outcome)

    def reap(limit: int) -> None:
        while len(in_flight) > limit:
            # Dropped only once settled: an interrupt in between leaves it for _settle_finished.
            settle_all(in_flight[0].result())
            in_flight.popleft()

    def infer(batch: list[tuple[int, Job, np.ndarray, float]]) -> list[tuple[int, ImageRecord | Future]]:
        # Runs in an inference thread (or here): touches no state of this function but the pools.
        try:
            # Soft maps the post-processing will not read are never computed (soft_maps gives
            # (K, 0, 0) placeholders), so none are shipped to the workers either.
            probs, seconds = segmenter.soft_maps([rgb for _, _, rgb, _ in batch])
        except Exception as exc:  # e.g. an image too large for memory: fail this batch only
            return [
                (index, ImageRecord(
                    job.relative.as_posix(), job.source, FAILED, rgb.shape[1], rgb.shape[0], message=_describe(exc)
                ))
                for index, job, rgb, _ in batch
            ]
        outcomes: list[tuple[int, ImageRecord | Future]] = []
        for (index, job, rgb, decode_s), p, s in zip(batch, probs, seconds, strict=True):
            timings = {"decode": decode_s, "inference": s}
            if post_pool is None:
                outcomes.append((index, _finish(segmenter.finisher, job, rgb, p, timings)))
            else:
                outcomes.append((index, post_pool.submit(_finish_in_worker, job, rgb, p, timings)))
        return outcomes

    def run_bucket(key: tuple[int, int]) -> None:
        batch = buckets.pop(key)
        if infer_pool is None:
            settle_all(infer(batch))
        else:
            in_flight.append(infer_pool.submit(infer, batch))
            # Bound the images held in memory; oldest first keeps the progress in order.
            reap(2 * workers + streams)

    try:
        for index, job, rgb, decode_s, error in _decoded(jobs, decode_pool, options.prefetch):
            if error is not None:
                record = ImageRecord(job.relative.as_posix(), job.source, FAILED, message=_describe(error))
                settle(index, record)
                continue
            key = inference_size(*rgb.shape[:2], segmenter.options.max_size)
            buckets.setdefault(key, []).append((index, job, rgb, decode_s))
            if len(buckets[key]) >= batch_size:
                run_bucket(key)
            elif sum(map(len, buckets.values())) > 2 * batch_size:
                run_bucket(max(buckets, key=lambda k: len(buckets[k])))
        while buckets:
            run_bucket(next(iter(buckets)))
        reap(0)
    except BrokenProcessPool as exc:
        raise WNetError(
            "a post-processing worker process ended abruptly: out of memory, killed, or, in a Python "
            "script, segment_folder called without an `if __name__ == \"__main__\":` guard (the workers "
            "import the script again; see the README's library section)"
        ) from exc
    finally:
        blas_limit.restore_original_limits()
        # The inference threads first: they may still hand work to the post-processing pool.
        with deferred_interrupts():  # a second Ctrl-C must not cut the shutdown short (wnetcli.workers)
            for pool in (infer_pool, decode_pool, post_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            # Interrupted: the images the pools finished meanwhile are written; record them too.
            _settle_finished(in_flight, settle)
    return [record for record in records if record is not None]


def _settle_finished(in_flight: Iterable[Future], settle: Callable[[int, ImageRecord], None]) -> None:
    """Settle every image of ``in_flight`` (futures of inference calls, see :func:`run_jobs`)
    whose work has finished; the cancelled and the failed are left out."""
    for call in in_flight:
        if not call.done() or call.cancelled() or call.exception() is not None:
            continue
        for index, outcome in call.result():
            if not isinstance(outcome, Future):
                settle(index, outcome)
            elif outcome.done() and not outcome.cancelled() and outcome.exception() is None:
                settle(index, outcome.result())


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier ``summary.csv`` by image (empty if there is none or it is unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["image"]: row for row in csv.DictReader(handle) if row.get("image")}
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}


def _with_earlier_rows(records: list[ImageRecord], earlier: dict[str, dict[str, str]]) -> list[ImageRecord]:
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
    """What decides an image's outputs: the post-processing, the sizes the image is processed
    at, and, when the network runs, the model (its SHA-256) and the mirroring."""
    post = segmenter.postprocess_options
    settings = {"postprocess": asdict(post), "max_size": segmenter.options.max_size, "model": None}
    if segmenter.runs_network:
        settings["model"] = _file_sha256(segmenter.model_path)
        settings["tta"] = segmenter.options.tta
    return settings


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_run(segmenter: Segmenter, options: BatchOptions) -> str:
    """Append this run's settings to ``runs.jsonl`` in the output folder; return their id.

    One JSON object per line, appended, never rewritten: ``settings`` (the id that
    ``summary.csv`` gives each image), ``time``, ``version``, ``model``, ``model_info`` (when
    the network runs), ``network_run``, ``device``, ``segment``, ``postprocess``, ``save``,
    ``ucm_format``, ``shard``.
    """
    from datetime import datetime, timezone

    from wnetcli import __version__

    settings = run_settings(segmenter)
    identity = settings_id(settings)
    entry = {
        "settings": identity,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "model": str(segmenter.model_path),
        # Without the network run the model is neither loaded nor read: nothing to describe.
        "model_info": asdict(segmenter.info) if segmenter.runs_network else None,
        "network_run": segmenter.runs_network,
        "device": segmenter.device,
        "segment": {k: v for k, v in asdict(segmenter.options).items() if k != "postprocess"},
        **{k: v for k, v in settings.items() if k not in ("model",)},
        "save": list(options.save),
        "ucm_format": options.ucm_format,
        "shard": list(options.shard) if options.shard else None,
    }
    with LineLog(Path(options.out_dir) / RUNS_NAME) as runs:
        runs.write_line(json.dumps(entry, default=str))
    return identity


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
        records = _with_earlier_rows(sorted([*plan.decided, *ran], key=lambda record: record.image), earlier)
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
