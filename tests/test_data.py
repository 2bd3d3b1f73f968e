"""Training data: finding images (folders, VOC trees), bad folders, deterministic crops and batches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from training.config import TrainConfig  # noqa: E402
from training.data import (  # noqa: E402
    TrainingImages,
    find_training_images,
    iterate_batches,
    load_training_images,
    make_batch,
    random_resized_crop,
    resolve_image_root,
    shrink,
)
from wnetcli.errors import DataError  # noqa: E402


def _write_image(path, seed=0, shape=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return array


@pytest.mark.parametrize("layout", ["VOCdevkit/VOC2012/JPEGImages", "VOC2012/JPEGImages", "JPEGImages"])
def test_voc_layout_uses_only_the_jpeg_folder(tmp_path, layout):
    for i in range(3):
        _write_image(tmp_path / layout / f"2007_00000{i}.jpg", seed=i)
    # VOC's label maps are PNG images too, but not photos: they must not be trained on.
    segmentation = tmp_path / layout.replace("JPEGImages", "SegmentationClass")
    _write_image(segmentation / "2007_000000.png")
    assert resolve_image_root(tmp_path) == tmp_path / layout
    found = find_training_images(tmp_path)
    assert [p.name for p in found] == [f"2007_00000{i}.jpg" for i in range(3)]


def test_plain_folder_is_searched_recursively_for_every_format(tmp_path):
    for i, suffix in enumerate([".jpg", ".png", ".tif", ".bmp", ".webp"]):
        _write_image(tmp_path / f"sub{i % 2}" / f"image{i}{suffix}", seed=i)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(find_training_images(tmp_path)) == 5


def test_missing_folder_file_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        find_training_images(tmp_path / "nowhere")
    _write_image(tmp_path / "one.png")
    with pytest.raises(DataError, match="must be a folder"):
        find_training_images(tmp_path / "one.png")
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no training images"):
        find_training_images(tmp_path / "empty")


def test_unreadable_images_are_skipped_with_a_warning(tmp_path):
    _write_image(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    warnings = []
    images = load_training_images(tmp_path, TrainConfig(), warn=warnings.append)
    assert len(images) == 1 and images.paths[0].name == "good.png"
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]


def test_all_unreadable_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"junk")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 2"):
        load_training_images(tmp_path, TrainConfig(), warn=lambda _message: None)


def test_streamed_images_replace_an_unreadable_file_by_the_next_readable(tmp_path):
    good = _write_image(tmp_path / "b.png")
    (tmp_path / "a.jpg").write_bytes(b"junk")
    warnings = []
    images = TrainingImages(sorted(tmp_path.iterdir()), max_side=0, in_memory=False, warn=warnings.append)
    np.testing.assert_array_equal(images.get(0), good)
    np.testing.assert_array_equal(images.get(0), good)
    assert len(warnings) == 1  # remembered as bad, not re-read and re-reported


def test_shrink_bounds_the_shorter_side():
    image = np.zeros((100, 300, 3), dtype=np.uint8)
    assert shrink(image, 50).shape == (50, 150, 3)
    assert shrink(image, 0) is image and shrink(image, 200) is image


def test_random_resized_crop_shape_range_and_flip():
    image = np.tile(np.arange(40, dtype=np.uint8)[None, :, None], (30, 1, 3)) * 6  # left-to-right ramp
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(20):
        crop = random_resized_crop(image, 16, rng, min_area=0.25, flip=True)
        assert crop.shape == (3, 16, 16) and crop.dtype == torch.float32
        assert crop.min() >= 0 and crop.max() <= 255
        flips += bool(crop[0, 0, 0] > crop[0, 0, -1])  # a flipped ramp decreases
    assert 0 < flips < 20


def test_batches_are_a_function_of_seed_step_and_rank(tmp_path):
    for i in range(5):
        _write_image(tmp_path / f"{i}.png", seed=i, shape=(24, 40))
    config = TrainConfig(batch_size=3, size=16)
    images = load_training_images(tmp_path, config)
    first = make_batch(images, config, step=7)
    assert first.shape == (3, 3, 16, 16)
    assert torch.equal(first, make_batch(images, config, step=7))
    assert not torch.equal(first, make_batch(images, config, step=8))
    assert not torch.equal(first, make_batch(images, config, step=7, rank=1))
    other_seed = TrainConfig(batch_size=3, size=16, seed=1)
    assert not torch.equal(first, make_batch(images, other_seed, step=7))


def test_streaming_through_workers_gives_the_in_memory_batches(tmp_path):
    for i in range(4):
        _write_image(tmp_path / f"{i}.png", seed=i, shape=(24, 40))
    config = TrainConfig(batch_size=2, size=16, workers=1)
    paths = find_training_images(tmp_path)
    cached = TrainingImages(paths, max_side=config.max_side, in_memory=True)
    streamed = TrainingImages(paths, max_side=config.max_side, in_memory=False)
    expected = list(iterate_batches(cached, config, 3, 6))
    got = list(iterate_batches(streamed, config, 3, 6))
    assert len(got) == len(expected) == 3
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
