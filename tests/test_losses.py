"""The W-Net losses: the offset-sum soft normalized cut against the dense N x N reference."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from training.losses import (  # noqa: E402 - after the importorskip
    EPSILON,
    apply_affinity,
    balanced_bce_loss,
    half_disc_offsets,
    intensity,
    reconstruction_loss,
    soft_ncut_loss,
    soft_ncut_loss_dense,
)
from training.model import WNet  # noqa: E402
from wnetcli.errors import InputError  # noqa: E402

PAPER = {"radius": 5, "sigma_i": 10.0, "sigma_x": 4.0}


def random_inputs(batch, classes, height, width, *, dtype=torch.float64, seed=0, device="cpu"):
    """Softmax probabilities (N, K, H, W) and RGB images (N, 3, H, W) on 0..255."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, height, width, generator=generator, dtype=dtype) * 2
    # Smooth images (a gradient plus noise) so that intensity affinities are neither all 0 nor all 1.
    ramp = torch.linspace(0, 200, width, dtype=dtype).expand(batch, 3, height, width)
    images = ramp + 30 * torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)
    return torch.softmax(logits, dim=1).to(device), images.to(device)


def loss_and_grad(loss_fn, probs, images, **params):
    probs = probs.detach().clone().requires_grad_(True)
    loss = loss_fn(probs, images, **params)
    loss.backward()
    return loss.detach(), probs.grad


def test_half_disc_offsets_cover_the_disc_once():
    offsets = half_disc_offsets(5)
    full = set(offsets) | {(-dy, -dx) for dy, dx in offsets} | {(0, 0)}
    expected = {(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6) if dy * dy + dx * dx < 25}
    assert full == expected
    assert len(offsets) == 34 and len(full) == 69
    assert half_disc_offsets(1) == ()  # strictly less: only the pixel itself
    assert set(half_disc_offsets(1.5)) == {(0, 1), (1, -1), (1, 0), (1, 1)}


@pytest.mark.parametrize(
    ("batch", "classes", "height", "width", "radius"),
    [
        (2, 3, 9, 11, 5),  # odd sizes
        (1, 2, 7, 7, 1),  # radius 1: only w(u, u)
        (3, 2, 6, 13, 2),
        (2, 64, 8, 10, 5),  # K = 64
        (1, 4, 4, 5, 5),  # radius larger than the image
        (2, 3, 3, 4, 7),  # offsets longer than the image in both directions
        (2, 5, 10, 9, 3.5),  # non-integer radius
    ],
)
def test_matches_dense_reference_values_and_gradients(batch, classes, height, width, radius):
    probs, images = random_inputs(batch, classes, height, width)
    params = {"radius": radius, "sigma_i": 10.0, "sigma_x": 4.0}
    fast, fast_grad = loss_and_grad(soft_ncut_loss, probs, images, **params)
    dense, dense_grad = loss_and_grad(soft_ncut_loss_dense, probs, images, **params)
    torch.testing.assert_close(fast, dense, rtol=1e-5, atol=0)
    torch.testing.assert_close(fast_grad, dense_grad, rtol=1e-5, atol=1e-5 * dense_grad.abs().max().item())


def test_float32_matches_float64_reference():
    probs, images = random_inputs(2, 20, 12, 15)
    fast, fast_grad = loss_and_grad(soft_ncut_loss, probs.float(), images.float(), **PAPER)
    dense, dense_grad = loss_and_grad(soft_ncut_loss_dense, probs, images, **PAPER)
    assert fast.dtype == torch.float32 and fast_grad.dtype == torch.float32
    torch.testing.assert_close(fast.double(), dense, rtol=1e-5, atol=0)
    torch.testing.assert_close(fast_grad.double(), dense_grad, rtol=1e-4, atol=1e-5 * dense_grad.abs().max().item())


def test_gradcheck_float64():
    probs, images = random_inputs(2, 3, 5, 6)
    probs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: soft_ncut_loss(p, images, radius=3, sigma_i=20.0, sigma_x=2.0), probs)


def test_apply_affinity_matches_dense_matrix():
    probs, images = random_inputs(1, 3, 6, 7)
    features = intensity(images, torch.float64)
    affinity_probs, degree = apply_affinity(probs, features, **PAPER)
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).double()
    distance2 = torch.cdist(positions, positions).square()
    f = features.reshape(-1)
    w = torch.exp(-((f[:, None] - f[None, :]) ** 2) / 100.0 - distance2 / 16.0) * (distance2 < 25)
    torch.testing.assert_close(affinity_probs.reshape(3, -1), probs.reshape(3, -1) @ w)
    torch.testing.assert_close(degree.reshape(-1), w.sum(dim=1))


@pytest.mark.parametrize("classes", [2, 5, 64])
def test_uniform_probabilities_give_k_minus_one(classes):
    # assoc(A_k, A_k) / assoc(A_k, V) = (1/K^2) 1^T W 1 / ((1/K) 1^T W 1) = 1/K for every class.
    _, images = random_inputs(2, classes, 9, 10, dtype=torch.float32)
    probs = torch.full((2, classes, 9, 10), 1.0 / classes)
    loss = soft_ncut_loss(probs, images, **PAPER)
    assert loss.item() == pytest.approx(classes - 1, rel=1e-6)


def two_flat_regions(height=16, width=16):
    """Left half dark (20), right half bright (220); and its perfect 2-class segmentation."""
    images = torch.full((1, 3, height, width), 20.0)
    images[..., width // 2 :] = 220.0
    perfect = torch.zeros(1, 2, height, width)
    perfect[:, 0, :, : width // 2] = 1.0
    perfect[:, 1, :, width // 2 :] = 1.0
    return images, perfect


def test_perfect_segmentation_beats_random_and_swapped():
    images, perfect = two_flat_regions()
    random = torch.softmax(torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    # Cutting across the edge: top/bottom halves, each straddling the dark/bright boundary.
    across = torch.zeros_like(perfect)
    across[:, 0, :8] = 1.0
    across[:, 1, 8:] = 1.0
    perfect_loss = soft_ncut_loss(perfect, images, **PAPER).item()
    assert perfect_loss < soft_ncut_loss(random, images, **PAPER).item()
    assert perfect_loss < soft_ncut_loss(across, images, **PAPER).item()
    # Intensities 200 apart with sigma_i = 10: no affinity across the edge, so the cut costs ~0.
    assert perfect_loss == pytest.approx(0.0, abs=1e-6)


def test_batch_mean_of_per_image_losses():
    probs, images = random_inputs(3, 4, 8, 9)
    singles = [soft_ncut_loss(probs[i : i + 1], images[i : i + 1], **PAPER) for i in range(3)]
    torch.testing.assert_close(soft_ncut_loss(probs, images, **PAPER), torch.stack(singles).mean())
    # Per image, not one graph over the batch: one image's loss ignores the others' pixels.
    _, grad = loss_and_grad(soft_ncut_loss, probs, images, **PAPER)
    _, grad_first = loss_and_grad(soft_ncut_loss, probs[:1], images[:1], **PAPER)
    torch.testing.assert_close(grad[:1], grad_first / 3)


def test_cpu_image_groups_do_not_change_the_result(monkeypatch):
    probs, images = random_inputs(5, 3, 8, 8)
    whole = loss_and_grad(soft_ncut_loss, probs, images, **PAPER)
    monkeypatch.setattr("training.losses._CPU_GROUP_BYTES", 1)  # one image per group
    single = loss_and_grad(soft_ncut_loss, probs, images, **PAPER)
    torch.testing.assert_close(whole, single)


def test_images_get_no_gradient_and_half_precision_probs_work():
    probs, images = random_inputs(1, 3, 8, 8, dtype=torch.float32)
    images.requires_grad_(True)
    half = probs.to(torch.bfloat16).requires_grad_(True)
    loss = soft_ncut_loss(half, images, **PAPER)
    assert loss.dtype == torch.float32
    loss.backward()
    assert images.grad is None
    assert half.grad is not None and half.grad.dtype == torch.bfloat16


def test_autocast_keeps_float32():
    probs, images = random_inputs(1, 3, 8, 8, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = soft_ncut_loss(probs, images, **PAPER)
    torch.testing.assert_close(loss, soft_ncut_loss(probs, images, **PAPER))


def test_backward_twice_with_retained_graph():
    probs, images = random_inputs(1, 3, 8, 8)
    probs.requires_grad_(True)
    loss = soft_ncut_loss(probs, images, **PAPER)
    (first,) = torch.autograd.grad(loss, probs, retain_graph=True)
    (second,) = torch.autograd.grad(loss, probs)
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize(
    ("probs_shape", "images_shape", "params", "message"),
    [
        ((1, 2, 8, 8), (1, 3, 8, 9), PAPER, "differ"),
        ((2, 2, 8, 8), (1, 3, 8, 8), PAPER, "differ"),
        ((1, 2, 8, 8), (1, 1, 8, 8), PAPER, "RGB"),
        ((2, 8, 8), (1, 3, 8, 8), PAPER, r"\(N, K, H, W\)"),
        ((0, 2, 8, 8), (0, 3, 8, 8), PAPER, "at least one image"),
        ((1, 2, 8, 8), (1, 3, 8, 8), {**PAPER, "radius": 0}, "radius"),
        ((1, 2, 8, 8), (1, 3, 8, 8), {**PAPER, "sigma_i": -1.0}, "sigma_i"),
        ((1, 2, 8, 8), (1, 3, 8, 8), {**PAPER, "sigma_x": float("nan")}, "sigma_x"),
    ],
)
def test_rejects_bad_inputs(probs_shape, images_shape, params, message):
    with pytest.raises(InputError, match=message):
        soft_ncut_loss(torch.rand(probs_shape), torch.rand(images_shape), **params)


def test_dense_reference_refuses_large_images():
    with pytest.raises(InputError, match="tiny"):
        soft_ncut_loss_dense(torch.rand(1, 2, 65, 64), torch.rand(1, 3, 65, 64), **PAPER)


def test_reconstruction_loss_is_mse_in_normalized_scale():
    images = torch.rand(2, 3, 8, 8) * 255
    target = WNet.normalize(images)
    assert reconstruction_loss(target, target).item() == 0.0
    shifted = target + 0.5
    assert reconstruction_loss(shifted, target).item() == pytest.approx(0.25)
    half = reconstruction_loss(shifted.to(torch.bfloat16), target)
    assert half.dtype == torch.float32
    with pytest.raises(InputError, match="differ"):
        reconstruction_loss(target, target[:, :2])


def test_epsilon_keeps_an_empty_class_finite():
    probs, images = random_inputs(1, 3, 6, 6, dtype=torch.float32)
    probs = torch.cat([probs, torch.zeros(1, 1, 6, 6)], dim=1).requires_grad_(True)
    loss = soft_ncut_loss(probs, images, **PAPER)
    loss.backward()
    assert EPSILON > 0 and torch.isfinite(loss) and torch.isfinite(probs.grad).all()


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    probs, images = random_inputs(3, 20, 32, 40, dtype=torch.float32)
    cpu = loss_and_grad(soft_ncut_loss, probs, images, **PAPER)
    cuda = loss_and_grad(soft_ncut_loss, probs.cuda(), images.cuda(), **PAPER)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=1e-4, atol=1e-5 * cpu[1].abs().max().item())


def test_balanced_bce_matches_a_hand_computation():
    # Image 1: targets (0, 0, 0.5, 1) -> beta = 2/4 zeros; image 2: (0, 0, 0, 0.25) -> beta = 3/4.
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]], [[[1.0, -2.0], [0.5, -0.5]]]], dtype=torch.float64)
    targets = torch.tensor([[[[0.0, 0.0], [0.5, 1.0]]], [[[0.0, 0.0], [0.0, 0.25]]]], dtype=torch.float64)

    def bce(x, t):
        s = 1 / (1 + math.exp(-x))
        return -(t * math.log(s) + (1 - t) * math.log(1 - s))

    per_image = []
    for n, beta in ((0, 0.5), (1, 0.75)):
        total = 0.0
        for x, t in zip(logits[n].flatten().tolist(), targets[n].flatten().tolist(), strict=True):
            total += (beta if t > 0 else 1 - beta) * bce(x, t)
        per_image.append(total / 4)
    expected = sum(per_image) / 2
    assert balanced_bce_loss(logits, targets).item() == pytest.approx(expected, rel=1e-12)


def test_balanced_bce_gradient_pushes_boundaries_up_and_the_rest_down():
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    targets = torch.zeros(1, 1, 4, 4)
    targets[..., 1, :] = 1.0  # one boundary row: 4 of 16 pixels
    balanced_bce_loss(logits, targets).backward()
    grad = logits.grad[0, 0]
    assert (grad[1] < 0).all() and (grad[[0, 2, 3]] > 0).all()
    # Balanced: the rare boundary pixels pull as hard, in total, as the many others push.
    assert grad[1].sum().item() == pytest.approx(-grad[[0, 2, 3]].sum().item(), rel=1e-6)


def test_balanced_bce_under_bfloat16_is_float32_and_checks_shapes():
    logits = torch.randn(2, 1, 5, 6).to(torch.bfloat16)
    loss = balanced_bce_loss(logits, torch.rand(2, 1, 5, 6))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
        balanced_bce_loss(torch.zeros(2, 2, 5, 6), torch.zeros(2, 2, 5, 6))
    with pytest.raises(InputError):
        balanced_bce_loss(torch.zeros(2, 1, 5, 6), torch.zeros(2, 1, 5, 5))
