"""The W-Net losses: soft normalized cut on the encoder's output, reconstruction, and the
class-balanced boundary loss of the boundary head (:func:`balanced_bce_loss`).

The soft normalized cut (Xia & Kulis 2017, eq. 4) of a soft segmentation ``p`` (K classes)
of an image with pixel affinities ``w`` is::

    J(p) = K - sum_k  (p_k^T W p_k) / (p_k^T d),    d = W 1  (the degree of each pixel)

with ``w(u, v) = exp(-(F(u) - F(v))^2 / sigma_i^2) * exp(-|X(u) - X(v)|^2 / sigma_x^2)`` for
pixel positions closer than ``radius`` (strictly), else 0; ``F`` is the mean of R, G, B on the
0..255 scale. ``W`` is never built: :func:`soft_ncut_loss` sums over the pixel offsets inside
the disc, each a shifted slice of ``p``, in O(pixels * radius^2 * K) time and O(pixels * K)
memory. Because ``w`` is symmetric, one weight map serves an offset and its opposite, and the
gradient has the closed form::

    dJ/dp_k = -(2 W p_k / (p_k^T d) - (p_k^T W p_k) d / (p_k^T d)^2)

so the forward pass keeps only ``W p`` and ``d``, and the backward pass is one elementwise
expression with no further sums over offsets.

References
----------
.. [1] X. Xia and B. Kulis, "W-Net: A Deep Model for Fully Unsupervised Image Segmentation",
   arXiv:1711.08506, 2017.
.. [2] J. Shi and J. Malik, "Normalized Cuts and Image Segmentation", IEEE TPAMI 22(8), 2000.
.. [3] S. Xie and Z. Tu, "Holistically-Nested Edge Detection", ICCV 2015.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from wnetcli.errors import InputError

# Added to each assoc(A_k, V) so that a class no pixel belongs to divides by a positive
# number; assoc(A_k, V) of a class present anywhere is at least its probability mass (w(u,u) = 1).
EPSILON = 1e-8

# On CPU, images go through the offset loop in groups whose probabilities and W p together stay
# under this many bytes, so that the ~70 passes over them hit the last-level cache (32 MiB
# here) rather than memory: faster than the whole batch at once for K = 20 and K = 64
# (benchmarks/bench_loss.py; docs/experiments.md). Other devices take the whole batch at once
# (one kernel launch per offset, not per image).
_CPU_GROUP_BYTES = 12 * 2**20

# Largest image the dense reference accepts: its affinity matrix has pixels^2 entries.
_DENSE_MAX_PIXELS = 4096


def _check_parameters(radius: float, sigma_i: float, sigma_x: float) -> None:
    for name, value in (("radius", radius), ("sigma_i", sigma_i), ("sigma_x", sigma_x)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive finite number, got {value!r}")


def _check_inputs(probs: torch.Tensor, images: torch.Tensor) -> None:
    if probs.ndim != 4:
        raise InputError(f"probs must be (N, K, H, W), got shape {tuple(probs.shape)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must be (N, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if images.shape[0] != probs.shape[0] or images.shape[2:] != probs.shape[2:]:
        raise InputError(
            f"images {tuple(images.shape)} and probs {tuple(probs.shape)} differ in batch size or height/width"
        )
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        raise InputError(f"probs must hold at least one image and one class, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise InputError(f"probs must be a floating-point tensor, got {probs.dtype}")
    if images.device != probs.device:
        raise InputError(f"images are on {images.device} but probs on {probs.device}")


def _compute_dtype(probs: torch.Tensor) -> torch.dtype:
    """float32, or float64 when given float64 (for gradcheck); half types are cast up."""
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def intensity(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The brightness feature F of the affinity: mean of R, G, B.

    Parameters
    ----------
    images : torch.Tensor
        (N, 3, H, W) RGB, any real dtype, on the 0..255 scale.
    dtype : torch.dtype
        Floating-point type of the result.

    Returns
    -------
    torch.Tensor
        (N, 1, H, W) of ``dtype`` on 0..255, detached (images are data, not parameters).
    """
    return images.detach().to(dtype).mean(dim=1, keepdim=True)


@lru_cache(maxsize=32)
def half_disc_offsets(radius: float) -> tuple[tuple[int, int], ...]:
    """Pixel offsets (dy, dx) with ``dy^2 + dx^2 < radius^2``, one of each pair ``o, -o``.

    Keeps ``dy > 0``, or ``dy == 0 and dx > 0``; the zero offset is left out (it is w(u,u) = 1).
    ``radius = 5`` gives 34 offsets (the disc holds 69 points with the centre).

    Returns
    -------
    tuple of (int, int)
        The offsets, row-major.
    """
    reach = math.ceil(radius) - 1  # the largest integer strictly below radius
    return tuple(
        (dy, dx)
        for dy in range(0, reach + 1)
        for dx in range(-reach, reach + 1)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius
    )


def _offset_slices(dy: int, dx: int, height: int, width: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Row/column slices of the pixels ``u`` and of their partners ``u + (dy, dx)``, both inside the image.

    Slicing instead of padding means pixels near the border simply have fewer neighbours
    (w = 0 outside the image), and no padded copy is ever made. Requires ``dy >= 0``.
    """
    rows_u, rows_v = slice(0, height - dy), slice(dy, height)
    if dx >= 0:
        cols_u, cols_v = slice(0, width - dx), slice(dx, width)
    else:
        cols_u, cols_v = slice(-dx, width), slice(0, width + dx)
    return (rows_u, cols_u), (rows_v, cols_v)


def apply_affinity(
    probs: torch.Tensor,
    features: torch.Tensor,
    *,
    radius: float,
    sigma_i: float,
    sigma_x: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``W p`` and the degree ``d = W 1`` of the disc-limited affinity, without building ``W``.

    Parameters
    ----------
    probs : torch.Tensor
        (N, K, H, W) floating point, contiguous.
    features : torch.Tensor
        (N, 1, H, W) intensity F on 0..255, same dtype and device as ``probs``.
    radius, sigma_i, sigma_x : float
        Disc radius in pixels (strict), intensity and spatial scales of the Gaussian affinity.

    Returns
    -------
    affinity_probs : torch.Tensor
        (N, K, H, W): ``(W p_k)(u) = sum_v w(u, v) p_k(v)`` for each image and class.
    degree : torch.Tensor
        (N, 1, H, W): ``d(u) = sum_v w(u, v)``, at least 1 (the pixel itself).

    Notes
    -----
    For each offset ``o`` of :func:`half_disc_offsets` the weight map ``w_o(u) = w(u, u + o)``
    is computed once on the (N, 1, H, W) intensity and used twice: ``(W p)(u) += w_o(u) p(u + o)``
    and, since ``w(u + o, u) = w_o(u)``, ``(W p)(u + o) += w_o(u) p(u)``. Every update is an
    in-place ``addcmul_`` on slices, so the extra memory is one weight map.
    """
    batch, classes, height, width = probs.shape
    affinity_probs = probs.clone()  # the zero offset: w(u, u) = 1
    degree = torch.ones_like(features)
    if probs.device.type == "cpu":
        group = max(1, _CPU_GROUP_BYTES // (2 * probs[0].numel() * probs.element_size()))
    else:
        group = batch
    inv_sigma_i2 = 1.0 / sigma_i**2
    for start in range(0, batch, group):
        chunk = slice(start, start + group)
        p, wp, f, d = probs[chunk], affinity_probs[chunk], features[chunk], degree[chunk]
        for dy, dx in half_disc_offsets(radius):
            if dy >= height or abs(dx) >= width:  # no pixel pair this far apart (and slices would wrap)
                continue
            (rows_u, cols_u), (rows_v, cols_v) = _offset_slices(dy, dx, height, width)
            spatial = (dy * dy + dx * dx) / sigma_x**2
            weight = f[..., rows_u, cols_u] - f[..., rows_v, cols_v]
            weight = weight.square_().mul_(-inv_sigma_i2).sub_(spatial).exp_()
            wp[..., rows_u, cols_u].addcmul_(p[..., rows_v, cols_v], weight)
            wp[..., rows_v, cols_v].addcmul_(p[..., rows_u, cols_u], weight)
            d[..., rows_u, cols_u].add_(weight)
            d[..., rows_v, cols_v].add_(weight)
    return affinity_probs, degree


def _per_class_sums(probs: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """(N, K) sums over pixels of ``probs * other``; ``other`` is (N, K, H, W) or (N, 1, H, W)."""
    batch, classes = probs.shape[:2]
    flat = probs.reshape(batch, classes, -1)
    if other.shape[1] == 1:
        return torch.bmm(flat, other.reshape(batch, -1, 1)).squeeze(2)
    return torch.einsum("nkp,nkp->nk", flat, other.reshape(batch, classes, -1))


class _SoftNCut(torch.autograd.Function):
    """Batch-mean soft normalized cut with the closed-form backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, probs, features, radius, sigma_i, sigma_x):
        affinity_probs, degree = apply_affinity(probs, features, radius=radius, sigma_i=sigma_i, sigma_x=sigma_x)
        assoc_volume = _per_class_sums(probs, degree) + EPSILON  # assoc(A_k, V) = p_k^T d
        assoc_self = _per_class_sums(probs, affinity_probs)  # assoc(A_k, A_k) = p_k^T W p_k
        per_image = probs.shape[1] - (assoc_self / assoc_volume).sum(dim=1)
        ctx.save_for_backward(affinity_probs, degree, assoc_self, assoc_volume)
        return per_image.mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        affinity_probs, degree, assoc_self, assoc_volume = ctx.saved_tensors
        batch = affinity_probs.shape[0]
        # dJ_n/dp_k = -2 (W p_k) / a_k + (b_k / a_k^2) d ; the batch mean divides by N.
        scale = grad_output / batch
        coef_wp = (-2.0 * scale / assoc_volume)[..., None, None]
        coef_d = (scale * assoc_self / assoc_volume.square())[..., None, None]
        # Out of place, so that a second backward (retain_graph=True) still finds W p intact.
        grad = affinity_probs * coef_wp
        grad.addcmul_(degree, coef_d)
        return grad, None, None, None, None


def soft_ncut_loss(
    probs: torch.Tensor,
    images: torch.Tensor,
    radius: float = 5,
    sigma_i: float = 10.0,
    sigma_x: float = 4.0,
) -> torch.Tensor:
    """Soft normalized-cut loss of W-Net, averaged over the batch.

    Parameters
    ----------
    probs : torch.Tensor
        (N, K, H, W) softmax probabilities over K classes, any floating dtype (half types are
        computed in float32, float64 in float64); the gradient flows to it.
    images : torch.Tensor
        (N, 3, H, W) RGB on the 0..255 scale, same device; treated as data (no gradient).
    radius : float
        Pixels closer than ``radius`` (Euclidean, strictly) are connected; 5 in the paper.
    sigma_i : float
        Intensity scale on the 0..255 scale; 10 in the paper.
    sigma_x : float
        Spatial scale in pixels; 4 in the paper.

    Returns
    -------
    torch.Tensor
        Scalar: mean over images of ``J = K - sum_k assoc(A_k, A_k) / assoc(A_k, V)``, in
        ``[0, K - 1]`` up to rounding (``K - 1`` for uniform probabilities), float32 (float64 for
        float64 input).

    Raises
    ------
    InputError
        On mismatched shapes or devices, or a non-positive ``radius``, ``sigma_i`` or ``sigma_x``.

    Notes
    -----
    Time O(N H W K r^2); extra memory a few (N, K, H, W) buffers: ``W p``, kept for the
    backward pass, the gradient, and one temporary of the per-class sums.
    """
    _check_inputs(probs, images)
    _check_parameters(radius, sigma_i, sigma_x)
    dtype = _compute_dtype(probs)
    # .to() is differentiable: under AMP a half-precision probs gets its gradient cast back.
    # Autocast off, or it would run the per-class sums (bmm) in half precision.
    with torch.autocast(device_type=probs.device.type, enabled=False):
        return _SoftNCut.apply(
            probs.to(dtype).contiguous(), intensity(images, dtype), float(radius), float(sigma_i), float(sigma_x)
        )


def soft_ncut_loss_dense(
    probs: torch.Tensor,
    images: torch.Tensor,
    radius: float,
    sigma_i: float,
    sigma_x: float,
) -> torch.Tensor:
    """Reference soft normalized cut that builds the full (HW x HW) affinity matrix; tests only.

    Same arguments, result and differentiability as :func:`soft_ncut_loss` (plain autograd,
    computed in the dtype of ``probs``), restricted to images of at most 4096 pixels: the
    matrix has ``(H W)^2`` entries per image.
    """
    _check_inputs(probs, images)
    _check_parameters(radius, sigma_i, sigma_x)
    batch, classes, height, width = probs.shape
    if height * width > _DENSE_MAX_PIXELS:
        raise InputError(f"the dense reference is for tiny images; {height}x{width} has more than 4096 pixels")
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=probs.dtype, device=probs.device),
        torch.arange(width, dtype=probs.dtype, device=probs.device),
        indexing="ij",
    )
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)
    distance2 = torch.cdist(positions, positions).square()
    spatial = torch.exp(-distance2 / sigma_x**2) * (distance2 < radius**2)
    losses = []
    for n in range(batch):
        feature = images[n].detach().to(probs.dtype).mean(dim=0).reshape(-1)
        affinity = torch.exp(-((feature[:, None] - feature[None, :]) ** 2) / sigma_i**2) * spatial
        p = probs[n].reshape(classes, -1)
        assoc_self = ((p @ affinity) * p).sum(dim=1)
        assoc_volume = p @ affinity.sum(dim=1) + EPSILON
        losses.append(classes - (assoc_self / assoc_volume).sum())
    return torch.stack(losses).mean()


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the decoder's output and its target.

    Parameters
    ----------
    reconstruction : torch.Tensor
        (N, 3, H, W), the second output of :meth:`training.model.WNet.forward`, which is in the
        network's normalised scale [-1, 1] (not 0..255).
    target : torch.Tensor
        Same shape: the input images in that same scale, i.e. ``WNet.normalize(images)`` =
        ``(images - 127.5) / 127.5``. Passing 0..255 images here would make the loss ~1e4 times
        larger and meaningless.

    Returns
    -------
    torch.Tensor
        Scalar mean over all elements of the squared difference (float32 for half inputs).
    """
    if reconstruction.shape != target.shape:
        raise InputError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ")
    dtype = _compute_dtype(reconstruction)
    return torch.nn.functional.mse_loss(reconstruction.to(dtype), target.detach().to(dtype))


def balanced_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy with soft targets (HED, Xie and Tu 2015, eq. 2).

    Boundary pixels are rare (a few percent of an image), so an unweighted cross-entropy is
    minimised by predicting "no boundary" everywhere. Per image, with ``beta`` the share of
    pixels whose target is 0, a pixel whose target is above 0 weighs ``beta`` and the others
    ``1 - beta``; each pixel's cross-entropy uses its soft target value:
    ``-(t log s + (1 - t) log(1 - s))`` with ``s = sigmoid(logit)``.

    Parameters
    ----------
    logits : torch.Tensor
        (N, 1, H, W) boundary logits (before the sigmoid), any floating dtype; the gradient
        flows to it.
    targets : torch.Tensor
        Same shape, the teacher's boundary strengths in [0, 1] (0: no boundary); data, no
        gradient.

    Returns
    -------
    torch.Tensor
        Scalar float32 (float64 for float64 logits): per image the mean over its pixels of
        ``weight * cross-entropy``, then the mean over images. An image whose targets are all
        0 (or all above 0) contributes 0.

    Raises
    ------
    InputError
        If the shapes differ or are not (N, 1, H, W).
    """
    if logits.ndim != 4 or logits.shape[1] != 1 or targets.shape != logits.shape:
        raise InputError(
            f"logits and targets must both be (N, 1, H, W), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    dtype = _compute_dtype(logits)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, targets = logits.to(dtype), targets.detach().to(dtype)
        positive = targets > 0
        beta = 1.0 - positive.to(dtype).mean(dim=(1, 2, 3), keepdim=True)  # share of target-0 pixels
        weights = torch.where(positive, beta, 1.0 - beta)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (weights * losses).mean(dim=(1, 2, 3)).mean()
