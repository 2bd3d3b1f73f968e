"""benchmarks/learned_affinity.py: the teacher's sure pairs on an image with known regions, and
the embedding as a likeness cue."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from learned_affinity import LearnedAffinity, embed, pixel_features, teacher_pairs  # noqa: E402

from wnetcli.segmentation.cues import ImageContext, NetworkMaps  # noqa: E402


def two_regions(seed: int = 0) -> np.ndarray:
    """(64, 96, 3) uint8: a dark left half and a bright right half, both with mild noise."""
    rng = np.random.default_rng(seed)
    rgb = np.full((64, 96, 3), 60.0)
    rgb[:, 48:] = 200.0
    return np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)


def test_pairs_across_the_known_border_are_apart_and_pairs_within_a_half_together():
    superpixels, pairs, apart = teacher_pairs(two_regions(), same_below=0.3, apart_above=0.7)
    # Which half each superpixel lies in (each lies in one: the border is a sharp step).
    half = np.zeros(int(superpixels.max()), dtype=int)
    for label in range(1, int(superpixels.max()) + 1):
        columns = np.nonzero(superpixels == label)[1]
        assert columns.max() < 48 or columns.min() >= 48, "a superpixel straddles the border"
        half[label - 1] = int(columns.min() >= 48)
    crossing = half[pairs[:, 0]] != half[pairs[:, 1]]
    assert crossing.any() and (~crossing).any()
    assert (apart[crossing] == 1).all()
    assert (apart[~crossing] == 0).all()


def test_the_embedding_is_a_soft_assignment_per_pixel(tmp_path):
    rgb = two_regions(1)
    maps = NetworkMaps(np.full((4, 64, 96), 0.25, np.float32), np.zeros((64, 96), np.float32))
    features = pixel_features(rgb, maps)
    assert features.shape == (3 + 15 + 4 + 1, 64, 96) and features.dtype == np.float32
    rng = np.random.default_rng(0)
    weights = {
        "mean": features.reshape(features.shape[0], -1).mean(1), "std": np.ones(features.shape[0]),
        "0_weight": rng.normal(size=(8, features.shape[0])), "0_bias": np.zeros(8),
        "2_weight": rng.normal(size=(5, 8)), "2_bias": np.zeros(5),
    }
    embedding = embed(features, weights)
    assert embedding.shape == (5, 64, 96)
    np.testing.assert_allclose(embedding.sum(0), 1.0, atol=1e-5)
    np.savez(tmp_path / "embedding.npz", **weights)
    cue = LearnedAffinity(weights=str(tmp_path / "embedding.npz"))
    (kind, weight, data), = cue.likeness(ImageContext(rgb, 1, maps), 0.5)
    assert (kind, weight) == ("dense", 0.5)
    np.testing.assert_allclose(data, embedding, atol=1e-6)
