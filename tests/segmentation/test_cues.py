"""wnetcli.segmentation.cues: each cue on small synthetic images, and its checks."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2lab

from wnetcli.errors import InputError
from wnetcli.segmentation.cues import (
    CUES,
    ArgmaxSplit,
    ColourHistograms,
    ImageContext,
    LabGradient,
    NetworkBoundaries,
    NetworkClassMix,
    NetworkEdges,
    NetworkLikeness,
    NetworkMaps,
    Textons,
)
from wnetcli.segmentation.cues.colour import colour_gradient
from wnetcli.segmentation.cues.network import probability_boundaries
from wnetcli.segmentation.postprocess import boundary_maps
from wnetcli.segmentation.recipe import Use


def step_probs(height: int = 10, width: int = 12, k: int = 3) -> np.ndarray:
    """One-hot soft maps: class 0 left of column width // 2, class 1 right of it."""
    probs = np.zeros((k, height, width), dtype=np.float32)
    probs[0, :, : width // 2] = 1
    probs[1, :, width // 2 :] = 1
    return probs


def test_probability_boundaries_mark_changes_only():
    probs = step_probs()
    edges = probability_boundaries(probs, sigma=0)
    assert edges.dtype == np.float32
    expected = np.zeros(probs.shape[1:], dtype=np.float32)
    expected[:, 5:7] = 1  # both pixels of the changing pair
    np.testing.assert_array_equal(edges, expected)
    uniform = np.full((4, 6, 7), 0.25, dtype=np.float32)
    np.testing.assert_array_equal(probability_boundaries(uniform), 0)


def test_probability_boundaries_stay_in_unit_range_when_smoothed():
    rng = np.random.default_rng(0)
    probs = rng.random((5, 9, 11)).astype(np.float32)
    probs /= probs.sum(axis=0)
    edges = probability_boundaries(probs, sigma=1.0)
    assert edges.min() >= 0 and edges.max() <= 1 and edges.max() > 0


@pytest.mark.parametrize("sigmas", [(1.0,), (2.0,), (1.0, 2.0, 4.0)])
def test_colour_gradient_of_a_step_follows_its_contrast_at_every_scale(sigmas):
    rgb = np.zeros((40, 40, 3), dtype=np.uint8)
    rgb[:, 20:] = 120
    lab = rgb2lab(rgb)
    delta_e = float(np.linalg.norm(lab[0, 0] - lab[0, -1]))
    cue = colour_gradient(lab, sigmas, contrast=40.0)
    expected = 1 - np.exp(-delta_e / 40.0)
    # The step lies between two pixels: sampled half a pixel off its centre the peak is a
    # little lower (exp(-1/8) at sigma 1).
    assert expected * 0.85 < cue[20, 19:21].max() <= expected * 1.01
    assert cue[:, :5].max() < 1e-3 and cue[:, -5:].max() < 1e-3


def test_the_boundary_map_mixes_the_cues_by_weight():
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[:, :, 0] = np.arange(12) * 20
    context = ImageContext(rgb, network=NetworkMaps(soft_maps=step_probs()))
    colour = LabGradient().boundary(context)
    wnet = NetworkEdges(smoothed=False).boundary(context)
    np.testing.assert_allclose(colour, colour_gradient(context.lab))
    np.testing.assert_allclose(wnet, probability_boundaries(step_probs()))
    uses = (Use(NetworkEdges(smoothed=False), boundary=3), Use(LabGradient(), boundary=1))
    mixed, flood = boundary_maps(uses, context)
    np.testing.assert_allclose(mixed, 0.75 * wnet + 0.25 * colour, rtol=1e-5, atol=1e-6)
    assert flood is None
    # A cue kept out of the watershed weighs in the merge costs only.
    uses = (Use(NetworkEdges(smoothed=False), boundary=3, flood=False), Use(LabGradient(), boundary=1))
    mixed, flood = boundary_maps(uses, context)
    np.testing.assert_allclose(flood, colour, rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: LabGradient(sigmas=()), "LabGradient.sigmas"),
        (lambda: LabGradient(contrast=0.0), "LabGradient.contrast"),
        (lambda: ColourHistograms(sigmas=(0.0,)), "ColourHistograms.sigmas"),
        (lambda: ColourHistograms(bins=1), "ColourHistograms.bins"),
        (lambda: Textons(textons=1), "Textons.textons"),
        (lambda: Textons(downsample=9), "Textons.downsample"),
        (lambda: NetworkEdges(sigma=-1.0), "NetworkEdges.sigma"),
        (lambda: NetworkClassMix(sigmas=()), "NetworkClassMix.sigmas"),
        (lambda: LabGradient(sigmas=("1",)), "LabGradient.sigmas"),
    ],
)
def test_each_cue_checks_its_own_fields(make, field):
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        make()


def test_cues_say_what_they_read_and_give():
    assert {name: cls().reads for name, cls in CUES.items()} == {
        "lab_gradient": {"image"}, "colour_histograms": {"image"}, "textons": {"image"},
        "network_edges": {"smoothed_maps"}, "network_class_mix": {"smoothed_maps"},
        "network_likeness": {"smoothed_maps"}, "argmax_split": {"smoothed_maps"},
        "network_boundaries": {"boundaries"},
    }
    assert NetworkEdges(smoothed=False).reads == {"soft_maps"}
    with pytest.raises(InputError, match="gives no likeness"):
        Use(LabGradient(), likeness=1.0)
    with pytest.raises(InputError, match="gives no partition"):
        Use(LabGradient(), boundary=1.0, split=True)


def test_the_network_cues_read_its_maps_and_say_when_there_are_none():
    probs = step_probs()
    context = ImageContext(np.zeros((10, 12, 3), dtype=np.uint8), network=NetworkMaps(soft_maps=probs))
    np.testing.assert_array_equal(ArgmaxSplit(smoothed=False).partition(context), probs.argmax(axis=0))
    [(kind, weight, data)] = NetworkLikeness(smoothed=False).likeness(context, 0.25)
    assert kind == "dense" and weight == 0.25 and data.shape == probs.shape
    boundaries = np.linspace(0, 1, 120, dtype=np.float32).reshape(10, 12)
    with_map = ImageContext(np.zeros((10, 12, 3), dtype=np.uint8), network=NetworkMaps(boundaries=boundaries))
    np.testing.assert_allclose(NetworkBoundaries().boundary(with_map), boundaries)
    with pytest.raises(InputError, match="soft maps"):
        NetworkEdges().boundary(with_map)
    with pytest.raises(InputError, match="boundary map"):
        NetworkBoundaries().boundary(context)


def test_smoothed_maps_are_computed_once_per_image_and_timed():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 16, 20)).astype(np.float32)
    probs /= probs.sum(axis=0)
    context = ImageContext(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8), network=NetworkMaps(soft_maps=probs))
    first = context.soft_maps(smoothed=True)
    assert context.soft_maps(smoothed=True) is first and context.seconds_in_crf > 0
    assert not np.allclose(first, probs)


def two_textures(height: int = 64, width: int = 64) -> np.ndarray:
    """(H, W, 3) float32 CIELAB: vertical stripes (period 4) left, horizontal stripes right,
    both alternating L = 30 / 70 with a = b = 0, so the two halves share one colour histogram."""
    lab = np.zeros((height, width, 3), dtype=np.float32)
    rows, cols = np.mgrid[0:height, 0:width]
    left = cols < width // 2
    stripes = np.where(left, (cols // 2) % 2, (rows // 2) % 2)
    lab[..., 0] = np.where(stripes == 1, 70.0, 30.0)
    return lab


def test_textons_tell_apart_textures_of_the_same_colours():
    from wnetcli.segmentation.cues.textons import texton_map

    lab = two_textures()
    textons = texton_map(lab, n_textons=8)
    assert textons.shape == (64, 64) and textons.dtype == np.int32
    assert textons.min() >= 0 and textons.max() < 8
    np.testing.assert_array_equal(textons, texton_map(lab, n_textons=8))  # seeded: deterministic
    # Away from the seam, no texton is shared by the two halves.
    left, right = set(np.unique(textons[8:-8, 4:24])), set(np.unique(textons[8:-8, 40:60]))
    assert left and right and not left & right


def test_texture_gradient_peaks_at_the_texture_boundary_only():
    from wnetcli.segmentation.cues.textons import texture_gradient

    lab = two_textures()
    grad = texture_gradient(lab, n_textons=8, sigmas=(4.0,))
    assert grad.dtype == np.float32 and grad.min() >= 0 and grad.max() <= 1
    seam = grad[16:-16, 28:36].mean()
    inside = np.concatenate([grad[16:-16, 6:18].ravel(), grad[16:-16, 46:58].ravel()]).mean()
    assert seam > 0.5 and inside < 0.25 * seam


def test_texton_map_of_a_flat_image_is_one_texture():
    from wnetcli.segmentation.cues.textons import texton_map

    assert not texton_map(np.full((9, 7, 3), 50.0, dtype=np.float32)).any()


@pytest.mark.parametrize("shape", [(3, 2, 5), (4, 9, 13), (3, 1, 6), (3, 6, 1)])
def test_gradient_is_numpy_gradient_and_zero_along_an_axis_of_one_pixel(shape):
    from wnetcli.segmentation.cues.colour import gradient

    values = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    for axis in (1, 2):
        expected = np.gradient(values, axis=axis) if shape[axis] > 1 else np.zeros_like(values)
        np.testing.assert_array_equal(gradient(values, axis), expected)


def test_texton_filter_bank_is_gaussian_filter_bit_for_bit():
    from scipy import ndimage as ndi

    from wnetcli.segmentation.cues.textons import _DERIVATIVE_ORDERS, _derivative_responses

    grey = np.random.default_rng(2).random((23, 31), dtype=np.float32)
    scales = (1.0, 2.0)
    expected = [
        ndi.gaussian_filter(grey, sigma, order=order, mode="reflect") * np.float32(sigma ** sum(order))
        for sigma in scales
        for order in _DERIVATIVE_ORDERS
    ]
    np.testing.assert_array_equal(_derivative_responses(grey, scales), np.stack(expected))


def test_nearest_centre_is_scipys_vq_and_empty_textons_keep_their_centre():
    from scipy.cluster.vq import vq

    from wnetcli.segmentation.cues.textons import _lloyd, _nearest_centre

    rng = np.random.default_rng(3)
    points = rng.normal(size=(5000, 10)).astype(np.float32)
    centres = rng.normal(size=(16, 10)).astype(np.float32)
    centres[5] = 40.0  # far from every point: no member
    labels = _nearest_centre(points, centres, chunk=1000)  # several chunks
    np.testing.assert_array_equal(labels, vq(points, centres)[0])
    assert 5 not in labels
    moved = _lloyd(points.astype(np.float64), centres.astype(np.float64))  # no warning reaches the user
    np.testing.assert_array_equal(moved[5], centres[5])

def _random_lab(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rgb2lab(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).astype(np.float32)


@pytest.mark.parametrize(("height", "width"), [(13, 18), (16, 16), (1, 7), (9, 1)])
@pytest.mark.parametrize("grid", [2, 3, 4])
def test_block_histograms_are_the_block_means_of_the_pixel_histograms(height, width, grid):
    from wnetcli.segmentation.cues.histograms import lab_histograms
    from wnetcli.segmentation.grids import block_mean

    lab = _random_lab(height, width)
    pixel = lab_histograms(lab, 6)
    blocks = lab_histograms(lab, 6, grid)
    assert blocks.shape == (3, 6, -(-height // grid), -(-width // grid))
    np.testing.assert_allclose(blocks, block_mean(pixel.reshape(18, height, width), grid).reshape(blocks.shape),
                               atol=1e-6)


def test_histogram_gradient_from_block_histograms_equals_the_per_pixel_route():
    from wnetcli.segmentation.cues.histograms import histogram_grid, lab_histogram_gradient, lab_histograms

    lab = _random_lab(37, 45, seed=1)
    lab[:, 20:] += np.float32(30.0)  # a colour edge, so the gradient has something to find
    sigmas = (4.0, 8.0)
    assert histogram_grid(sigmas) == 2 and histogram_grid((4.0, 6.0)) == 1 and histogram_grid((1.0,)) == 1
    by_pixel = lab_histogram_gradient(lab_histograms(lab, 12), sigmas)
    by_block = lab_histogram_gradient(lab_histograms(lab, 12, 2), sigmas, grid=2, shape=(37, 45))
    assert by_block.shape == (37, 45)
    np.testing.assert_allclose(by_block, by_pixel, atol=1e-5)
    with pytest.raises(ValueError, match="cannot give the gradient at sigma 2"):
        lab_histogram_gradient(lab_histograms(lab, 12, 2), (2.0,), grid=2, shape=(37, 45))


def test_soft_bin_positions_are_the_two_nonzero_soft_bins():
    from wnetcli.segmentation.cues.histograms import soft_bin_positions, soft_bins

    values = np.array([[-5.0, 0.0, 3.3, 50.0], [99.9, 100.0, 120.0, 61.25]], dtype=np.float32)
    dense = soft_bins(values, 5, 0.0, 100.0)
    lower, upper = soft_bin_positions(values, 5, 0.0, 100.0)
    rebuilt = np.zeros_like(dense)
    rows, cols = np.indices(values.shape)
    rebuilt[lower, rows, cols] += 1 - upper
    rebuilt[lower + 1, rows, cols] += upper
    np.testing.assert_allclose(rebuilt, dense, atol=1e-6)
    assert lower.min() >= 0 and lower.max() <= 3


def test_w_net_class_mix_cue_sees_a_change_of_class_mixture_not_flicker():
    # Left: classes 0 and 1 alternate pixel by pixel (a texture-like flicker); right: class 2.
    probs = np.zeros((3, 40, 40), dtype=np.float32)
    rows, cols = np.indices((40, 40))
    flicker = (rows + cols) % 2
    probs[0][(cols < 20) & (flicker == 0)] = 1
    probs[1][(cols < 20) & (flicker == 1)] = 1
    probs[2][cols >= 20] = 1
    context = ImageContext(np.full((40, 40, 3), 128, dtype=np.uint8), network=NetworkMaps(soft_maps=probs))
    mix = NetworkClassMix(smoothed=False, sigmas=(4.0,)).boundary(context)
    pixel = NetworkEdges(smoothed=False, sigma=0.0).boundary(context)
    assert mix[10:30, 18:22].mean() > 0.5 and mix[10:30, 2:7].mean() < 0.05  # 13+ px from the seam
    assert pixel[10:30, 4:12].mean() == 1.0  # the pixel cue fires all over the flicker
