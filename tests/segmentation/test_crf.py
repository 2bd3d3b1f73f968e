"""wnetcli.segmentation.crf: the windowed mean-field CRF on synthetic images with known regions."""

from __future__ import annotations

import numpy as np
import pytest

from wnetcli.segmentation.crf import CRFOptions, dense_crf

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=np.uint8)


def four_squares(height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of four flat coloured quadrants and its (H, W) labels 0..3."""
    labels = np.zeros((height, width), dtype=np.int64)
    labels[:, width // 2 :] += 1
    labels[height // 2 :, :] += 2
    return COLOURS[labels], labels


def noisy_probs(labels: np.ndarray, flip: float, seed: int = 0) -> np.ndarray:
    """Soft maps that favour the true label, except on a random ``flip`` fraction of pixels."""
    rng = np.random.default_rng(seed)
    k = 4
    wrong = rng.random(labels.shape) < flip
    favoured = np.where(wrong, (labels + rng.integers(1, k, labels.shape)) % k, labels)
    probs = np.full((k, *labels.shape), 0.4 / (k - 1), dtype=np.float32)
    np.put_along_axis(probs, favoured[None], 0.6, axis=0)
    return probs


def test_crf_removes_label_noise_inside_flat_regions():
    rgb, labels = four_squares()
    probs = noisy_probs(labels, flip=0.2)
    before = np.mean(probs.argmax(axis=0) != labels)
    smoothed = dense_crf(rgb, probs)
    after = np.mean(smoothed.argmax(axis=0) != labels)
    assert before > 0.15
    assert after < 0.02


def test_crf_keeps_clean_boundaries_where_the_colour_changes():
    rgb, labels = four_squares()
    probs = noisy_probs(labels, flip=0.0)
    smoothed = dense_crf(rgb, probs, CRFOptions(iterations=8))
    np.testing.assert_array_equal(smoothed.argmax(axis=0), labels)
    # Confidence grows: the neighbours agree.
    assert smoothed.max(axis=0).mean() > probs.max(axis=0).mean()


@pytest.mark.parametrize(("height", "width", "downsample"), [(37, 23, 4), (5, 9, 2), (1, 7, 4), (16, 16, 1)])
def test_crf_output_is_a_distribution_of_the_input_size(height, width, downsample):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    probs = rng.random((3, height, width)).astype(np.float32)
    probs /= probs.sum(axis=0)
    out = dense_crf(rgb, probs, CRFOptions(downsample=downsample, radius=2))
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    assert np.all(out >= 0)


def test_zero_iterations_and_one_class_return_the_input():
    rgb, labels = four_squares(8, 8)
    probs = noisy_probs(labels, flip=0.3)
    np.testing.assert_array_equal(dense_crf(rgb, probs, CRFOptions(iterations=0)), probs)
    one = np.ones((1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(dense_crf(rgb, one), one)


def test_crf_rejects_mismatched_shapes_and_bad_options():
    rgb, labels = four_squares(8, 8)
    with pytest.raises(ValueError, match="same size"):
        dense_crf(rgb, noisy_probs(labels, 0.0)[:, :4])
    with pytest.raises(ValueError, match="downsample"):
        CRFOptions(downsample=0)
    with pytest.raises(ValueError, match="appearance_lab"):
        CRFOptions(appearance_lab=0)


def test_crf_with_very_large_weights_stays_a_finite_distribution():
    # The last update multiplies p by exp(message): with weights far beyond any tuned value
    # the messages span hundreds of log units, which must neither overflow nor leave a pixel
    # with every class at 0.
    rgb, labels = four_squares()
    probs = noisy_probs(labels, flip=0.2)
    out = dense_crf(rgb, probs, CRFOptions(appearance_weight=500.0, smoothness_weight=300.0))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    assert np.mean(out.argmax(axis=0) != labels) < 0.02
