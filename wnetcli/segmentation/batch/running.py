"""Running a planned folder run with decoding, inference and post-processing overlapped.

A decoding thread reads images ahead, inference threads run the network when the recipe
reads it, and a pool of post-processing worker processes runs the recipe and writes the files,
so the CPU is busy while the model runs. The number of images in flight is bounded, so memory
does not grow with the folder size. A failure of one image (unreadable file, odd contents) is
recorded with its reason and the run goes on; a full disk stops it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from wnetcli.errors import OutputError, WNetError
from wnetcli.images import read_rgb
from wnetcli.segmentation.batch.planning import BatchOptions, Job
from wnetcli.segmentation.batch.reporting import FAILED, OK, ImageRecord
from wnetcli.segmentation.cues import NetworkMaps
from wnetcli.segmentation.outputs import write_outputs
from wnetcli.segmentation.pipeline import Finisher, Segmenter
from wnetcli.tuning import single_threaded_blas
from wnetcli.workers import deferred_interrupts, serve_run, signal_handlers

__all__ = ["MAX_AUTO_WORKERS", "ProgressCallback", "resolve_workers", "run_jobs", "start_worker_server"]

ProgressCallback = Callable[[int, int], None]
#: Cap of the automatic number of post-processing processes (each holds its own arrays).
MAX_AUTO_WORKERS = 8


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


def _finish(finisher: Finisher, job: Job, rgb: np.ndarray, maps: NetworkMaps | None, timings: dict) -> ImageRecord:
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
        result = finisher(rgb, maps, timings.pop("inference", 0.0))
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
# no overlap at all (docs/experiments.md).

_worker_finisher: Finisher | None = None


_worker_blas_limit = None


def _init_worker(finisher: Finisher, run_pid: int) -> None:
    global _worker_finisher, _worker_blas_limit
    _worker_finisher = finisher
    _worker_blas_limit = single_threaded_blas()  # see wnetcli.tuning: kept for the worker's life
    serve_run(run_pid)


def _finish_in_worker(job: Job, rgb: np.ndarray, maps: NetworkMaps | None, timings: dict) -> ImageRecord:
    return _finish(_worker_finisher, job, rgb, maps, timings)


#: What the fork server imports once for all the workers: the post-processing and the parts of
#: SciPy and scikit-image it uses (the post-processing modules import those where they are used).
_WORKER_PRELOAD = [
    "wnetcli.segmentation.batch.running", "wnetcli.segmentation.postprocess", "scipy.ndimage", "scipy.sparse",
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
    """Start the fork server now, so that its imports (a large part of a short run's start-up,
    docs/experiments.md) run while this process
    loads the model and decodes, rather than after the first inference. Without forkserver
    (spawn) there is no server and nothing to do; a server already running is kept.

    The server starts with the stop signals (Ctrl-C, SIGTERM) ignored, and so do the workers it
    forks until their initializer (:func:`wnetcli.workers.serve_run`) takes over: a signal to
    the whole job (a terminal's Ctrl-C, SLURM's time limit) that ended the server closed the
    pipes through which the pool learns that a worker has exited, so the pool took its live
    workers for dead and dropped the images under way (written, but missing from
    ``summary.csv``), and one that reached a worker before its initializer broke the pool. An
    ignored signal stays ignored across the server's exec; it ends anyway when this process does.
    """
    if _worker_context().get_start_method() == "forkserver":
        import signal
        from multiprocessing import forkserver

        with signal_handlers((signal.SIGINT, signal.SIGTERM), signal.SIG_IGN):
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
    nothing to overlap it with, and starting a worker took longer than it saves
    (``benchmarks/bench_startup.py``; docs/experiments.md)."""
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
    # Every (index, record or post-processing future) as soon as an inference call makes it: what
    # an interrupted run settles from. A future that a stop signal cut off between the pool's
    # submit and in_flight.append still runs, and its images are written.
    started: list[tuple[int, ImageRecord | Future]] = []
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
            # Without a cue that reads the network, it does not run: no maps (None) go to the workers.
            maps, seconds = segmenter.network_maps([rgb for _, _, rgb, _ in batch])
        except Exception as exc:  # e.g. an image too large for memory: fail this batch only
            outcomes = [
                (index, ImageRecord(
                    job.relative.as_posix(), job.source, FAILED, rgb.shape[1], rgb.shape[0], message=_describe(exc)
                ))
                for index, job, rgb, _ in batch
            ]
            started.extend(outcomes)
            return outcomes
        outcomes: list[tuple[int, ImageRecord | Future]] = []
        for (index, job, rgb, decode_s), p, s in zip(batch, maps, seconds, strict=True):
            timings = {"decode": decode_s, "inference": s}
            if post_pool is None:
                outcome = (index, _finish(segmenter.finisher, job, rgb, p, timings))
            else:
                outcome = (index, post_pool.submit(_finish_in_worker, job, rgb, p, timings))
            started.append(outcome)  # one bytecode-atomic append, before anything can cut it off
            outcomes.append(outcome)
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
            key = rgb.shape[:2]  # images of one size run through the network at one size
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
            _settle_finished(started, settle)
    return [record for record in records if record is not None]


def _settle_finished(
    started: Iterable[tuple[int, ImageRecord | Future]], settle: Callable[[int, ImageRecord], None]
) -> None:
    """Settle every image of ``started`` (what the inference calls made, see :func:`run_jobs`)
    whose work has finished; the cancelled and the failed are left out."""
    for index, outcome in list(started):
        if not isinstance(outcome, Future):
            settle(index, outcome)
        elif outcome.done() and not outcome.cancelled() and outcome.exception() is None:
            settle(index, outcome.result())
