"""`evaluate(...)`: score a method on a list of BSDS images, in parallel processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wnetcli.errors import InputError
from wnetcli.evaluation.boundary import (
    MAX_DIST,
    BoundaryGroundTruth,
    BoundaryScores,
    boundary_counts,
    boundary_scores,
    thin,
)
from wnetcli.evaluation.dataset import BsdsImage, load_ground_truth
from wnetcli.evaluation.inputs import Method, Prediction
from wnetcli.evaluation.regions import (
    RegionCounts,
    RegionGroundTruth,
    RegionScores,
    nested_region_counts,
    region_counts,
    region_scores,
)
from wnetcli.options import check_field_types
from wnetcli.tuning import single_threaded_blas
from wnetcli.ucm import nested_levels, seg_to_boundary, ucm2_to_boundary, ucm2_to_labels
from wnetcli.workers import deferred_interrupts, serve_run

__all__ = ["EvaluationOptions", "EvaluationResult", "ImageResult", "evaluate", "evaluate_image", "thresholds_for"]


@dataclass(frozen=True)
class EvaluationOptions:
    """How to run the benchmark.

    Attributes
    ----------
    thresholds : int
        Number of thresholds for soft maps and ucm2 hierarchies (the official default is 99).
    jobs : int
        Worker processes (1: run in this process).
    boundary, regions : bool
        Which benchmarks to run (the region benchmark needs a ucm2 or a list of segmentations).
    max_dist : float
        Boundary matching tolerance as a fraction of the image diagonal.
    save_dir : Path or None
        Write every prediction there (``<id>.npy`` for a ucm2 or soft map, ``<id>.mat`` with
        ``segs`` for a list of segmentations), so that ``--results`` can score it again.
    """

    thresholds: int = 99
    jobs: int = 1
    boundary: bool = True
    regions: bool = True
    max_dist: float = MAX_DIST
    save_dir: Path | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.max_dist <= 0:
            raise InputError(f"max_dist must be a positive fraction of the diagonal, got {self.max_dist}")
        if self.thresholds < 1:
            raise InputError(f"thresholds must be at least 1, got {self.thresholds}")
        if self.jobs < 1:
            raise InputError(f"jobs must be at least 1, got {self.jobs}")
        if not (self.boundary or self.regions):
            raise InputError("nothing to evaluate: enable the boundary or the region benchmark")


def thresholds_for(n: int) -> np.ndarray:
    """The benchmark's ``n`` thresholds: ``linspace(1/(n+1), 1 - 1/(n+1), n)``."""
    return np.linspace(1.0 / (n + 1), 1.0 - 1.0 / (n + 1), n)


@dataclass
class ImageResult:
    """The counts of one image.

    Attributes
    ----------
    id : str
    kind : str
        The prediction kind (``"ucm2"``, ``"segs"``, ``"soft"``).
    levels : int
        Number of thresholds (or segmentations).
    boundary : (T, 4) int64 ndarray or None
        ``cnt_r, sum_r, cnt_p, sum_p`` per threshold.
    regions : RegionCounts or None
    distinct : int
        Thresholds whose map differed from the previous one (the others were not recomputed).
    timings : dict of str to float
        CPU seconds of this process in ``"method"``, ``"ground_truth"``, ``"thin"``, ``"match"``,
        ``"regions"`` (CPU time, so that machines shared with other work still give stable figures).
    """

    id: str
    kind: str
    levels: int
    boundary: np.ndarray | None
    regions: RegionCounts | None
    distinct: int
    timings: dict[str, float] = field(default_factory=dict)


def _changed_levels(counts: np.ndarray) -> np.ndarray:
    """For monotone binary maps given by their pixel counts: True where the map changed."""
    changed = np.ones(counts.size, dtype=bool)
    changed[1:] = counts[1:] != counts[:-1]
    return changed


def _boundary_maps(prediction: Prediction, thresholds: np.ndarray, timings: dict) -> Iterator[np.ndarray | None]:
    """Thinned binary boundary map per level; None where it equals the previous level's map."""
    if prediction.kind == "segs":
        previous = None
        for seg in prediction.data:
            if previous is not None and np.array_equal(seg, previous):
                yield None
            else:
                start = time.process_time()
                bmap = thin(seg_to_boundary(seg))
                timings["thin"] += time.process_time() - start
                yield bmap
            previous = seg
        return
    soft = ucm2_to_boundary(prediction.data) if prediction.kind == "ucm2" else prediction.data
    values = np.sort(soft, axis=None)
    # pb >= t only loses pixels as t grows, so equal pixel counts mean equal maps.
    changed = _changed_levels(values.size - np.searchsorted(values, thresholds, side="left"))
    for t, new in zip(thresholds, changed, strict=True):
        if not new:
            yield None
            continue
        start = time.process_time()
        bmap = thin(soft >= t)
        timings["thin"] += time.process_time() - start
        yield bmap


def _region_levels(prediction: Prediction, thresholds: np.ndarray) -> Iterator[np.ndarray | None]:
    """Segmentation per level; None where it equals the previous level's."""
    if prediction.kind == "segs":
        previous = None
        for seg in prediction.data:
            yield None if previous is not None and np.array_equal(seg, previous) else seg
            previous = seg
        return
    ucm2 = prediction.data
    values = np.sort(ucm2, axis=None)
    # ucm2 <= t only gains pixels as t grows: equal counts mean equal components.
    changed = _changed_levels(np.searchsorted(values, thresholds, side="right"))
    for t, new in zip(thresholds, changed, strict=True):
        yield ucm2_to_labels(ucm2, t) if new else None


def _save_prediction(prediction: Prediction, image_id: str, folder: Path) -> None:
    from wnetcli.atomic import atomic_path

    if prediction.kind == "segs":
        from scipy.io import savemat

        cells = np.empty((1, len(prediction.data)), dtype=object)
        for k, seg in enumerate(prediction.data):
            cells[0, k] = np.asarray(seg, dtype=np.uint16 if np.max(seg) < 65536 else np.int64)
        with atomic_path(folder / f"{image_id}.mat") as tmp:
            savemat(tmp, {"segs": cells})
    else:
        with atomic_path(folder / f"{image_id}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(prediction.data))


def evaluate_image(image: BsdsImage, method: Method, options: EvaluationOptions) -> ImageResult:
    """Run ``method`` on one image and compute its boundary and region counts at every level.

    A top-level function so that worker processes can run it (spawn-safe).
    """
    timings = dict.fromkeys(("method", "ground_truth", "thin", "match", "regions"), 0.0)
    start = time.process_time()
    gt = load_ground_truth(image.ground_truth, image.image)
    timings["ground_truth"] = time.process_time() - start

    start = time.process_time()
    source = f"{getattr(method, 'name', 'method')} on {image.id}"
    prediction = method(image)
    if not isinstance(prediction, Prediction):
        raise InputError(f"{source}: a method must return a Prediction, got {type(prediction).__name__}")
    prediction = prediction.check(gt.shape, source)
    timings["method"] = time.process_time() - start
    if options.save_dir is not None:
        _save_prediction(prediction, image.id, Path(options.save_dir))

    if prediction.kind == "segs":
        thresholds = np.arange(1, len(prediction.data) + 1, dtype=np.float64)
    else:
        thresholds = thresholds_for(options.thresholds)

    bdry = None
    distinct = 0
    if options.boundary:
        bgt = BoundaryGroundTruth(gt.boundaries, options.max_dist)
        maps = list(_boundary_maps(prediction, thresholds, timings))
        distinct = sum(m is not None for m in maps)
        start = time.process_time()
        bdry = boundary_counts(maps, bgt)
        timings["match"] = time.process_time() - start

    regions = None
    if options.regions and prediction.kind != "soft":
        start = time.process_time()
        rgt = RegionGroundTruth(gt.segmentations)
        nested = nested_levels(prediction.data, thresholds) if prediction.kind == "ucm2" else None
        if nested is not None:
            regions = nested_region_counts(*nested, rgt)
        else:
            regions = region_counts(_region_levels(prediction, thresholds), rgt)
        timings["regions"] = time.process_time() - start
    return ImageResult(image.id, prediction.kind, thresholds.size, bdry, regions, distinct, timings)


@dataclass
class EvaluationResult:
    """Benchmark results over a data set.

    Attributes
    ----------
    method : str
    kind : str
        Prediction kind of the method.
    thresholds : (T,) ndarray
        Thresholds, or level numbers 1..T for lists of segmentations.
    boundary : BoundaryScores or None
    regions : RegionScores or None
        None for soft boundary maps, which have no regions.
    images : list of ImageResult
    seconds : float
        Wall-clock time of the whole evaluation.
    settings : dict
        What the method says about itself, so that the result can be reproduced (a pipeline
        method's recipe and model: :meth:`SegmenterMethod.describe`); empty for others.
    """

    method: str
    kind: str
    thresholds: np.ndarray
    boundary: BoundaryScores | None
    regions: RegionScores | None
    images: list[ImageResult]
    seconds: float
    settings: dict = field(default_factory=dict)


_worker_blas_limit = None


def _init_worker(run_pid: int) -> None:
    """Evaluation workers run with one BLAS thread (see :mod:`wnetcli.tuning`), end with the run
    and leave Ctrl-C to it (:func:`wnetcli.workers.serve_run`)."""
    global _worker_blas_limit
    _worker_blas_limit = single_threaded_blas()
    serve_run(run_pid)


def _run(
    images: Sequence[BsdsImage], method: Method, options: EvaluationOptions, progress: Callable[[int, int], None] | None
) -> list[ImageResult]:
    results: list[ImageResult | None] = [None] * len(images)
    if progress:
        progress(0, len(images))
    if options.jobs == 1:
        with single_threaded_blas():  # see wnetcli.tuning
            for k, image in enumerate(images):
                results[k] = evaluate_image(image, method, options)
                if progress:
                    progress(k + 1, len(images))
        return results
    pool = ProcessPoolExecutor(
        max_workers=min(options.jobs, len(images)), initializer=_init_worker, initargs=(os.getpid(),)
    )
    try:
        # The first submit forks the workers, which start with this process's signal handlers
        # until their initializer ignores Ctrl-C: one raised in them then broke the pool. Held
        # back here, a stop signal does nothing in them and is raised here once all are queued;
        # so is one that would land in the start of the pool's manager thread (wnetcli.workers).
        with deferred_interrupts():
            futures = {pool.submit(evaluate_image, image, method, options): k for k, image in enumerate(images)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress:
                progress(done, len(images))
    finally:
        # On Ctrl-C the queued images are dropped and the running ones finish; a second Ctrl-C
        # must not cut that short (wnetcli.workers).
        with deferred_interrupts():
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def evaluate(
    images: Sequence[BsdsImage],
    method: Method,
    options: EvaluationOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Score ``method`` on ``images`` with the BSDS boundary and region benchmarks.

    Parameters
    ----------
    images : sequence of BsdsImage
        The images and their annotation files (:func:`~wnetcli.evaluation.dataset.find_split`).
    method : Method
        Picklable callable image -> :class:`~wnetcli.evaluation.inputs.Prediction`.
    options : EvaluationOptions, optional
    progress : callable (done, total), optional
        Called after each image.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError
        If the method's predictions are of mixed kinds, or lists of segmentations of different
        lengths (the data set scores need the same levels for every image).
    """
    from wnetcli.tuning import tune_malloc

    tune_malloc()
    options = options or EvaluationOptions()
    if not images:
        raise InputError("no images to evaluate")
    start = time.perf_counter()
    results = _run(images, method, options, progress)
    kinds = {r.kind for r in results}
    if len(kinds) != 1:
        raise InputError(f"the method gave predictions of mixed kinds ({', '.join(sorted(kinds))})")
    levels = {r.levels for r in results}
    if len(levels) != 1:
        raise InputError(f"the lists of segmentations have different lengths ({sorted(levels)}); they must match")
    kind = kinds.pop()
    n_levels = levels.pop()
    thresholds = np.arange(1, n_levels + 1, dtype=np.float64) if kind == "segs" else thresholds_for(n_levels)
    bdry = None
    if options.boundary:
        bdry = boundary_scores(thresholds, np.stack([r.boundary for r in results]))
    regions = None
    if options.regions and kind != "soft":
        regions = region_scores(thresholds, [r.regions for r in results])
    return EvaluationResult(
        method=getattr(method, "name", type(method).__name__),
        kind=kind,
        thresholds=thresholds,
        boundary=bdry,
        regions=regions,
        images=results,
        seconds=time.perf_counter() - start,
        settings=method.describe() if hasattr(method, "describe") else {},
    )
