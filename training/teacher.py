"""Teacher targets for the boundary head: the hierarchy's own boundaries on each training image.

Self-training (Li et al., CVPR 2016, "Unsupervised learning of edges"): the segmentation
library's hierarchy, built from local image cues, makes its mistakes image by image; a network
trained to predict its boundaries over a whole data set can learn which local patterns are
lasting region borders. Each target is the teacher's ucm2 reduced to the image grid as the BSDS
boundary benchmark reads it (:func:`wnetcli.ucm.ucm2_to_boundary`): per pixel, the level in
[0, 1] at which the border below and to the right of it disappears (0: no border).

The targets are computed once per image at the training scale (the image after
:func:`training.data.shrink` to ``max_side``), in worker processes, and cached as 8-bit
grey PNGs (``round(value * 255)``) under::

    CACHE_DIR/<recipe>-<settings digest>[-mirror]-side<max_side>/<SHA-256 of the image file>.png

so that a resumed or repeated run (another run folder, another order of the data) reads them
back instead of recomputing. This module imports neither torch nor the data module at import
time: the worker processes need only the post-processing.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from wnetcli.atomic import atomic_path
from wnetcli.errors import DataError, InputError, TrainingError
from wnetcli.ucm import ucm2_to_boundary
from wnetcli.workers import deferred_interrupts, serve_run

if TYPE_CHECKING:
    from training.data import TrainingImages
    from wnetcli.segmentation.recipe import Recipe

__all__ = [
    "default_cache_dir",
    "existing",
    "hierarchy_ucm2",
    "read_target",
    "target_folder",
    "teacher_boundaries",
    "teacher_recipe",
    "teacher_targets",
    "write_target",
]

Progress = Callable[[int, int], None]


def teacher_recipe(recipe: str | Recipe) -> Recipe:
    """The teacher's recipe: a named recipe or a recipe file (:func:`wnetcli.segmentation.load_recipe`).

    A recipe whose cues read the network (a later round of self-training: the hierarchy with
    the boundaries learnt in the round before) runs the teacher model on each image.

    Raises
    ------
    InputError
        An unknown name or a bad file.
    """
    from wnetcli.segmentation.recipe import load_recipe

    return load_recipe(recipe)


#: The segmenters of the teachers that run a model, one per (model, recipe) in each process.
_SEGMENTERS: dict = {}


def _segmenter(recipe: Recipe, model: str | os.PathLike[str] | None):
    from wnetcli.segmentation import Segmenter, SegmentOptions

    key = (str(model), recipe)
    if key not in _SEGMENTERS:
        # One thread: the targets are computed by a worker per core. The image is already at
        # the training scale (max_side), which no max_size must change.
        options = SegmentOptions(recipe=recipe, device="cpu", threads=1, max_size=None)
        _SEGMENTERS[key] = Segmenter(Path(model) if model else None, options)
    return _SEGMENTERS[key]


def hierarchy_ucm2(rgb: np.ndarray, recipe: str | Recipe, model: str | os.PathLike[str] | None = None) -> np.ndarray:
    """The teacher's hierarchy of one image: the segmentation library's ucm2 for ``recipe``.

    The one call into the segmentation library.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The image at the training scale.
    recipe : str or Recipe
        A recipe name (``"default"``, ``"fast"``), a recipe file, or a loaded recipe
        (:func:`teacher_recipe`).
    model : path, optional
        The exported model the recipe's network cues read (None: the shipped default); used
        only when the recipe reads the network.

    Returns
    -------
    (2H+1, 2W+1) float32 ndarray
        Boundary strengths in [0, 1] on the BSDS doubled grid (:mod:`wnetcli.ucm`).

    Raises
    ------
    InputError
        See :func:`teacher_recipe`; or an image the post-processing refuses.
    """
    recipe = teacher_recipe(recipe)
    if recipe.reads_network:
        return _segmenter(recipe, model).segment(rgb).ucm2
    from wnetcli.segmentation.postprocess import postprocess

    return postprocess(rgb, recipe=recipe).ucm2


def teacher_boundaries(
    rgb: np.ndarray, recipe: str | Recipe, *, mirror: bool, model: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """The boundary target of one image: (H, W) float32 in [0, 1] (0 inside regions).

    ``ucm2[2::2, 2::2]`` of :func:`hierarchy_ucm2`; with ``mirror`` the ucm2 is first averaged
    with that of the left-right mirrored image, mirrored back. The two are averaged on the
    doubled grid, where mirroring maps every edge onto its own counterpart; on the image grid
    a mirrored map would be shifted by a pixel (each pixel keeps the border to its right).
    """
    ucm2 = hierarchy_ucm2(rgb, recipe, model)
    if mirror:
        mirrored = hierarchy_ucm2(np.ascontiguousarray(rgb[:, ::-1]), recipe, model)[:, ::-1]
        ucm2 = (ucm2 + mirrored) / 2
    return np.ascontiguousarray(ucm2_to_boundary(ucm2), dtype=np.float32)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/wnet/teacher`` (``~/.cache/wnet/teacher`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wnet" / "teacher"


def target_folder(
    cache_dir: str | os.PathLike[str], recipe: Recipe, *, mirror: bool, max_side: int,
    model: str | os.PathLike[str] | None = None,
) -> Path:
    """The cache folder of one teacher at one scale (see the module docstring).

    Named by the recipe's name and a digest of all its settings (:func:`recipe_to_dict`) and,
    when the recipe reads the network, of the model file, so that an edited recipe file, a
    default that changes with wnet or another model gets a folder of its own.
    """
    from wnetcli.model_info import file_sha256
    from wnetcli.segmentation.recipe import recipe_to_dict

    teacher = recipe_to_dict(recipe)
    if recipe.reads_network:
        teacher["model_sha256"] = file_sha256(model or recipe.network.shipped_model)
    settings = json.dumps(teacher, sort_keys=True, default=str)
    digest = hashlib.sha256(settings.encode("utf-8")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", recipe.name)
    return Path(cache_dir) / f"{name}-{digest}{'-mirror' if mirror else ''}-side{max_side}"


def write_target(path: str | os.PathLike[str], boundaries: np.ndarray) -> None:
    """Write a (H, W) float map in [0, 1] as an 8-bit grey PNG (``round(value * 255)``), atomically."""
    levels = np.round(np.clip(boundaries, 0.0, 1.0) * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(levels, mode="L").save(tmp, format="PNG")


def read_target(path: str | os.PathLike[str]) -> np.ndarray:
    """A cached target as (H, W) uint8 (255: strength 1); DataError naming the file if it is no such PNG."""
    try:
        with Image.open(path) as image:
            if image.mode != "L":
                raise DataError(f"{path} is not a boundary target (mode {image.mode}, not L): delete it to recompute")
            return np.asarray(image).copy()
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the boundary target {path} ({exc}): delete it to recompute") from exc


def _compute_target(rgb: np.ndarray, recipe: Recipe, mirror: bool, path: Path, model: str | None) -> None:
    write_target(path, teacher_boundaries(rgb, recipe, mirror=mirror, model=model))


_worker_blas_limit = None


def _init_worker(run_pid: int) -> None:
    """One BLAS thread per worker (there is a worker per core), end with the run, leave Ctrl-C to it."""
    global _worker_blas_limit
    from wnetcli.tuning import single_threaded_blas

    _worker_blas_limit = single_threaded_blas()
    serve_run(run_pid)


def _pool(workers: int) -> ProcessPoolExecutor:
    # Not fork: the training process holds torch's threads, which a forked child inherits
    # locked. The fork server (or spawn) starts the workers from a fresh interpreter.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))


def teacher_targets(
    images: TrainingImages,
    recipe: str | Recipe,
    *,
    mirror: bool = True,
    model: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Path | None]:
    """Compute (or find in the cache) the boundary target of every training image.

    Parameters
    ----------
    images : TrainingImages
        The training images; their ``max_side`` is the scale of the targets.
    recipe : str or Recipe
        The teacher (:func:`teacher_recipe`).
    mirror : bool
        Average with the mirrored image's hierarchy (:func:`teacher_boundaries`).
    model : path, optional
        The model the teacher recipe's network cues read (None: the shipped default).
    cache_dir : path, optional
        Default :func:`default_cache_dir`.
    workers : int, optional
        Processes computing targets (default: one per CPU core); 1 computes them in this one.
    shard : (rank, world_size)
        Compute only the missing targets of the images ``i`` with ``i % world_size == rank``
        (each process of a distributed run takes its share; the others' appear in the cache).
    progress : callable (done, total), optional
        Called once with the targets already cached, then after each image.
    warn : callable, optional
        Receives a message for each image left without a target (an unreadable file, an image
        the post-processing refuses); default :func:`warnings.warn`.

    Returns
    -------
    list of Path or None
        In the order of ``images.paths``: the target file (computed by this process, found in
        the cache, or another shard's), or None for an image left without one.

    Raises
    ------
    InputError
        For an unknown or unsuitable recipe (before any work).
    OutputError
        When the cache cannot be written.
    """
    from wnetcli.model_info import file_sha256

    recipe = teacher_recipe(recipe)
    model = str(model) if model else None
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    folder = target_folder(
        cache_dir or default_cache_dir(), recipe, mirror=mirror, max_side=images.max_side, model=model
    )
    rank, world_size = shard
    targets: list[Path | None] = []
    todo: list[int] = []
    planned: set[Path] = set()
    for index, source in enumerate(images.paths):
        try:
            target = folder / f"{file_sha256(source)}.png"
        except OSError as exc:
            warn(f"no boundary target for {source}: {exc.strerror or exc}")
            target = None
        targets.append(target)
        # A file listed twice (two folders, a copy) is computed once.
        if target is not None and not target.exists() and target not in planned:
            planned.add(target)
            if index % world_size == rank:
                todo.append(index)
    total = len(targets)
    done = total - len(todo)
    report = progress or (lambda done, total: None)
    report(done, total)

    def failed(index: int, reason: str) -> None:
        warn(f"no boundary target for {images.paths[index]}: {reason}; the image is left out")
        targets[index] = None

    workers = min(workers or os.cpu_count() or 1, len(todo))
    if workers <= 1:
        for index in todo:
            rgb = images.image(index)
            if rgb is None:
                failed(index, "unreadable")
            else:
                try:
                    _compute_target(rgb, recipe, mirror, targets[index], model)
                except InputError as exc:
                    failed(index, str(exc))
            done += 1
            report(done, total)
        return targets

    pending: dict[Future, int] = {}

    def settle(futures) -> None:
        nonlocal done
        for future in futures:
            index = pending.pop(future)
            try:
                future.result()
            except InputError as exc:
                failed(index, str(exc))
            done += 1
            report(done, total)

    pool = _pool(workers)
    try:
        for index in todo:
            rgb = images.image(index)
            if rgb is None:
                failed(index, "unreadable")
                done += 1
                report(done, total)
                continue
            # A few images in flight per worker: a large data set is not decoded into memory at once.
            while len(pending) >= 2 * workers:
                settle(wait(pending, return_when=FIRST_COMPLETED).done)
            # The first submit starts the workers; a stop signal meanwhile is raised once it is done.
            with deferred_interrupts():
                pending[pool.submit(_compute_target, rgb, recipe, mirror, targets[index], model)] = index
        while pending:
            settle(wait(pending, return_when=FIRST_COMPLETED).done)
    except BrokenProcessPool as exc:
        raise TrainingError(
            "a teacher worker process ended abruptly: out of memory, killed, or, in a Python script, "
            "train called without an `if __name__ == \"__main__\":` guard (the workers import the script again)"
        ) from exc
    finally:
        with deferred_interrupts():
            pool.shutdown(wait=True, cancel_futures=True)
    return targets


def existing(targets: Sequence[Path | None]) -> list[Path | None]:
    """``targets`` with None for the files that do not exist (another process's share that failed)."""
    return [target if target is not None and target.exists() else None for target in targets]

