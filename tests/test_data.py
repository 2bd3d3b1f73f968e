"""Training data: finding images (folders, VOC trees), bad folders, deterministic crops and batches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from training.config import ModelConfig, TrainConfig  # noqa: E402
from training.data import (  # noqa: E402
    BoundaryBatch,
    Crop,
    TrainingImages,
    colour_jitter,
    draw_crop,
    find_training_images,
    iterate_batches,
    load_training_images,
    make_batch,
    make_boundary_batch,
    random_resized_crop,
    resize_boundaries,
    resize_image,
    resolve_image_root,
    shrink,
)
from training.teacher import write_target  # noqa: E402
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


def _images_with_targets(tmp_path, count=3, shape=(24, 40), in_memory=True):
    """Images whose red channel is their own boundary target (target = red / 255)."""
    targets = []
    for i in range(count):
        array = _write_image(tmp_path / "images" / f"{i}.png", seed=i, shape=shape)
        write_target(tmp_path / "targets" / f"{i}.png", array[..., 0] / 255.0)
        targets.append(tmp_path / "targets" / f"{i}.png")
    images = TrainingImages(sorted((tmp_path / "images").iterdir()), max_side=0, in_memory=in_memory)
    images.attach_targets(targets)
    return images


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_crop_lands_on_the_same_crop_of_its_target(tmp_path, in_memory):
    # Crops of 24x40 images at 48 px are only ever enlarged, where both resizes are bilinear: the
    # target crop must then be the image crop's red channel / 255 (flips: the next test).
    images = _images_with_targets(tmp_path, in_memory=in_memory)
    config = TrainConfig(batch_size=4, size=48, min_crop_area=0.3, flip=False)
    for step in range(6):
        batch = make_boundary_batch(images, config, step)
        assert isinstance(batch, BoundaryBatch)
        assert batch.images.shape == batch.jittered.shape == (4, 3, 48, 48) and batch.targets.shape == (4, 1, 48, 48)
        torch.testing.assert_close(batch.targets[:, 0], batch.images[:, 0] / 255, atol=1e-5, rtol=0)
        assert batch.targets.min() >= 0 and batch.targets.max() <= 1
        # The boundary batch's plain images are the N-cut/reconstruction batch of the same step.
        assert torch.equal(batch.images, make_batch(images, config, step))


@pytest.mark.parametrize("left", [0, 2])
def test_the_flip_flips_image_and_target_alike(left):
    # Two regions split between columns 4 | 5; the BSDS convention marks the border on the pixel
    # left of it (column 4). Flipped, the crop's border is still on the pixel left of it.
    image = np.zeros((6, 10, 3), dtype=np.uint8)
    image[:, 5:] = 200
    target = np.zeros((6, 10), dtype=np.uint8)
    target[:, 4] = 255
    for flip in (False, True):
        crop = Crop(0, left, 6, 8, flip=flip)
        cropped_image = crop.apply(image, 8, resize_image)[0, 0]
        cropped_target = crop.apply(target, 8, resize_boundaries, borders=True)[0]
        step = int(np.flatnonzero(np.diff(cropped_image.numpy()) != 0)[0])  # the border lies right of this column
        assert cropped_target.eq(255).all(dim=0).nonzero().flatten().tolist() == [step]
        assert cropped_target.sum() == 8 * 255  # one column of the 8 x 8 crop
        assert (cropped_image[0] > cropped_image[-1]) == flip  # a flipped crop has the bright side left


def test_crops_draw_the_same_numbers_as_before():
    # draw_crop consumes the generator as random_resized_crop always did: batches of runs
    # without boundaries are unchanged.
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    crop = draw_crop(a, 30, 40, min_area=0.25, flip=True)
    assert torch.equal(crop.apply(image, 16, resize_image), random_resized_crop(image, 16, b, min_area=0.25, flip=True))
    assert a.random() == b.random()


def test_shrinking_a_target_keeps_thin_lines():
    target = torch.zeros(1, 1, 64, 64)
    target[..., 31, :] = 1.0  # one-pixel line
    target[..., :, 10] = 0.5
    small = resize_boundaries(target, 16)
    assert small.shape == (1, 1, 16, 16)
    assert small[0, 0, 7].eq(1.0).all()  # rows 28..31 -> row 7: the line survives at full strength
    assert small[0, 0, :, 2].max() == 1.0 and small[0, 0, 0, 2] == 0.5
    assert small.sum() < 16 * 2  # and stays thin: two lines of 16 pixels
    # Enlarging is bilinear; mixed (one axis grows, the other shrinks) gives the asked size.
    assert resize_boundaries(torch.rand(1, 1, 8, 8), 16).shape == (1, 1, 16, 16)
    assert resize_boundaries(torch.rand(1, 1, 40, 8), 16).shape == (1, 1, 16, 16)


def test_colour_jitter_is_seeded_keeps_the_range_and_changes_colours():
    image = torch.rand(3, 16, 16) * 255
    a = colour_jitter(image, np.random.default_rng(1))
    assert torch.equal(a, colour_jitter(image, np.random.default_rng(1)))
    assert not torch.equal(a, colour_jitter(image, np.random.default_rng(2)))
    assert a.shape == image.shape and a.min() >= 0 and a.max() <= 255
    assert (a - image).abs().mean() > 1.0
    # A grey image stays grey under saturation and hue changes (only brightness/contrast move it).
    grey = torch.full((3, 4, 4), 100.0)
    out = colour_jitter(grey, np.random.default_rng(3))
    assert (out.max(dim=0).values - out.min(dim=0).values).max() < 1e-3


def test_boundary_batches_are_a_function_of_seed_step_and_rank(tmp_path):
    images = _images_with_targets(tmp_path)
    config = TrainConfig(batch_size=2, size=16)
    first = make_boundary_batch(images, config, step=3)
    again = make_boundary_batch(images, config, step=3)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first.jittered, make_boundary_batch(images, config, step=3, rank=1).jittered)
    assert not torch.equal(first.jittered, first.images)


def test_attach_targets_leaves_out_images_without_one_and_checks_sizes(tmp_path):
    images = _images_with_targets(tmp_path, count=3)
    paths, targets = list(images.paths), [tmp_path / "targets" / f"{i}.png" for i in range(3)]
    fresh = TrainingImages(paths, max_side=0, in_memory=True)
    fresh.attach_targets([targets[0], None, targets[2]])
    assert [p.name for p in fresh.paths] == ["0.png", "2.png"]
    with pytest.raises(DataError, match="has a boundary target"):
        TrainingImages(paths, max_side=0, in_memory=True).attach_targets([None, None, None])
    with pytest.raises(DataError, match="no boundary targets"):
        TrainingImages(paths, max_side=0, in_memory=True).pair(0)
    write_target(tmp_path / "wrong.png", np.zeros((5, 5)))
    wrong = TrainingImages(paths[:1], max_side=0, in_memory=False)
    wrong.attach_targets([tmp_path / "wrong.png"])
    with pytest.raises(DataError, match="delete the target"):
        wrong.pair(0)


def test_streamed_boundary_batches_through_workers_are_the_in_memory_ones(tmp_path):
    cached = _images_with_targets(tmp_path, count=3, in_memory=True)
    streamed = TrainingImages(cached.paths, max_side=0, in_memory=False)
    streamed.attach_targets([tmp_path / "targets" / f"{i}.png" for i in range(3)])
    config = TrainConfig(batch_size=2, size=16, workers=1, boundary_weight=1.0, boundaries_from="fast",
                         model=ModelConfig(boundary_head=True))
    expected, got = list(iterate_batches(cached, config, 0, 3)), list(iterate_batches(streamed, config, 0, 3))
    assert all(isinstance(batch, BoundaryBatch) for batch in got)
    assert all(torch.equal(a, b) for x, y in zip(expected, got, strict=True) for a, b in zip(x, y, strict=True))
