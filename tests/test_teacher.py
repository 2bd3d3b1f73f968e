"""Teacher targets: the hierarchy's boundaries on known regions, mirroring, the cache and the worker pool."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from training import teacher  # noqa: E402
from training.data import TrainingImages  # noqa: E402
from training.teacher import (  # noqa: E402
    hierarchy_ucm2,
    read_target,
    target_folder,
    teacher_boundaries,
    teacher_recipe,
    teacher_targets,
)
from wnetcli.errors import DataError, InputError  # noqa: E402

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def four_squares(height: int = 40, width: int = 48, fourth=COLOURS[3]) -> np.ndarray:
    """(H, W, 3) uint8: four flat quadrants of different colours, split at H/2 and W/2."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = COLOURS[0]
    rgb[: height // 2, width // 2 :] = COLOURS[1]
    rgb[height // 2 :, : width // 2] = COLOURS[2]
    rgb[height // 2 :, width // 2 :] = fourth
    return rgb


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("recipe", ["default", "fast"])
def test_target_is_high_on_the_square_borders_and_zero_inside(recipe, mirror):
    target = teacher_boundaries(four_squares(), recipe, mirror=mirror)
    assert target.shape == (40, 48) and target.dtype == np.float32
    assert target.min() >= 0 and target.max() <= 1
    # ucm2[2::2, 2::2]: pixel (i, j) carries the border below / right of it, so the borders
    # between rows 19 | 20 and columns 23 | 24 sit on row 19 and column 23.
    assert target[19, :].min() > 0.5 and target[:, 23].min() > 0.5
    inside = np.ones_like(target, dtype=bool)
    inside[19, :] = inside[:, 23] = False
    inside[-1, :] = inside[:, -1] = False  # the frame repeats its inner neighbours (wnetcli.ucm)
    assert target[inside].max() == 0


def test_mirroring_averages_on_the_doubled_grid_without_a_shift():
    # An image that is not left-right symmetric: the mirrored hierarchy, mirrored back, puts its
    # borders on the same pixels, so the average keeps them where they are, not a pixel off.
    rgb = four_squares(width=50)
    rgb[:, 37:] = (90, 90, 90)  # a third column of regions, right of centre
    plain = teacher_boundaries(rgb, "default", mirror=False)
    mirrored = teacher_boundaries(rgb, "default", mirror=True)
    for target in (plain, mirrored):
        columns = np.flatnonzero(target[:, :-1].mean(axis=0) > 0.5)
        assert columns.tolist() == [24, 36]  # borders 24 | 25 and 36 | 37
    ucm2 = hierarchy_ucm2(rgb, "default")
    assert ucm2.shape == (81, 101)


def test_an_unknown_recipe_is_a_one_line_input_error():
    with pytest.raises(InputError, match="unknown recipe 'nope'"):
        teacher_recipe("nope")


def test_a_teacher_that_reads_the_network_runs_its_model_and_has_a_cache_folder_per_model(tmp_path):
    onnx_models = pytest.importorskip("onnx_models", reason="tests/onnx_models.py builds the test models")
    onnx_models.require_onnx()
    first = onnx_models.build_prototype_model(tmp_path / "a.onnx")
    second = onnx_models.build_prototype_model(tmp_path / "b.onnx", temperature=5.0)
    recipe = teacher_recipe("network")  # the default with the network's edges: a later round's teacher
    rgb = four_squares()
    target = teacher_boundaries(rgb, recipe, mirror=False, model=first)
    assert target[19, :].min() > 0.5 and target[:, 23].min() > 0.5
    assert not np.array_equal(target, teacher_boundaries(rgb, "default", mirror=False))  # the network counted
    folders = {target_folder(tmp_path, recipe, mirror=False, max_side=320, model=m) for m in (first, second)}
    assert len(folders) == 2  # another model, other targets
    # Without the network the model is no part of the teacher.
    image_only = teacher_recipe("default")
    assert target_folder(tmp_path, image_only, mirror=False, max_side=320, model=first) == target_folder(
        tmp_path, image_only, mirror=False, max_side=320, model=second
    )


def _folder_of_squares(tmp_path, count):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(count):
        fourth = (COLOURS[3][0], COLOURS[3][1], 40 + 60 * i)
        Image.fromarray(four_squares(fourth=fourth)).save(folder / f"{i}.png")
    return TrainingImages(sorted(folder.iterdir()), max_side=0, in_memory=True)


def test_targets_are_cached_by_content_teacher_and_scale(tmp_path, monkeypatch):
    images = _folder_of_squares(tmp_path, 2)
    calls, progress = [], []
    compute = teacher._compute_target
    monkeypatch.setattr(teacher, "_compute_target", lambda *args: calls.append(args[-1]) or compute(*args))
    cache = tmp_path / "cache"
    targets = teacher_targets(images, "fast", mirror=False, cache_dir=cache, workers=1,
                              progress=lambda done, total: progress.append((done, total)))
    assert len(calls) == 2 and progress == [(0, 2), (1, 2), (2, 2)]
    folder = target_folder(cache, teacher_recipe("fast"), mirror=False, max_side=0)
    assert all(target.parent == folder for target in targets)
    assert folder.name.startswith("fast-") and folder.name.endswith("-side0")
    stored = read_target(targets[0])
    expected = teacher_boundaries(images.get(0), "fast", mirror=False)
    np.testing.assert_array_equal(stored, np.round(expected * 255).astype(np.uint8))
    assert not list(folder.glob(".*"))  # no temporary files left
    # A repeated run (another order, the same files) computes nothing; another teacher, a mirror
    # or another scale does.
    progress.clear()
    again = teacher_targets(TrainingImages(images.paths[::-1], max_side=0, in_memory=True), "fast", mirror=False,
                            cache_dir=cache, workers=1, progress=lambda done, total: progress.append((done, total)))
    assert again == targets[::-1] and len(calls) == 2 and progress == [(2, 2)]
    teacher_targets(images, "fast", mirror=True, cache_dir=cache, workers=1)
    assert len(calls) == 4
    assert target_folder(cache, teacher_recipe("fast"), mirror=False, max_side=320) != folder
    assert target_folder(cache, teacher_recipe("default"), mirror=False, max_side=0) != folder


def test_worker_processes_give_the_same_targets(tmp_path):
    images = _folder_of_squares(tmp_path, 3)
    serial = teacher_targets(images, "fast", mirror=False, cache_dir=tmp_path / "serial", workers=1)
    pooled = teacher_targets(images, "fast", mirror=False, cache_dir=tmp_path / "pooled", workers=2)
    assert [p.name for p in serial] == [p.name for p in pooled]
    for a, b in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(read_target(a), read_target(b))


def test_shards_split_the_work_and_unreadable_images_get_no_target(tmp_path):
    images = _folder_of_squares(tmp_path, 3)
    first = teacher_targets(images, "fast", mirror=False, cache_dir=tmp_path / "c", workers=1, shard=(0, 2))
    assert [target.exists() for target in first] == [True, False, True]
    streamed = TrainingImages([*images.paths, tmp_path / "broken.png"], max_side=0, in_memory=False,
                              warn=lambda message: None)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    warnings = []
    targets = teacher_targets(streamed, "fast", mirror=False, cache_dir=tmp_path / "c", workers=1, warn=warnings.append)
    assert all(target.exists() for target in targets[:3]) and targets[3] is None
    assert len(warnings) == 1 and "broken.png" in warnings[0] and "left out" in warnings[0]


def test_a_broken_cache_file_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="bad.png.*delete it"):
        read_target(tmp_path / "bad.png")
