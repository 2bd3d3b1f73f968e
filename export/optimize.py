"""Exact rewrites of the trained encoder that make its ONNX graph fast on onnxruntime.

Each rewrite computes the same function as :meth:`training.model.WNet.encode_aligned` (up to
float rounding; ``wnet export`` checks the result against the original network). They exist
because profiling onnxruntime's CPU session on the plain export (quarter-width encoder,
336x496, 2 threads; the figures are in docs/experiments.md) showed where its time went:

* ``Softmax`` over the channel axis took over half of the run: onnxruntime transposes the tensor
  so that the softmax axis is last, and back. :class:`ExportableEncoder` writes the softmax
  as max / subtract / exp / sum / divide over axis 1, which stays in NCHW.
* Every ``BatchNormalization`` (the paper puts it *after* the ReLU, so it cannot fold into
  the preceding convolution) became a separate depthwise 1x1 convolution. A BatchNorm is a
  per-channel affine map, which folds exactly into a following 1x1 convolution: the head,
  and a ``resize_conv`` upsampler's convolution. Folds into the 3x3 convolutions (zero
  padding would see the BatchNorm's offset at the borders), across max-pooling (a negative
  scale turns max into min) or into a 2x2 transposed convolution (the offset's
  contribution differs between the four output phases, which a per-channel bias cannot
  express) would not be exact and are not done.

Both rewrites made the session faster in ``benchmarks/bench_inference.py --variants``, the
softmax rewrite most.

Tried and dropped: writing the 2x2 transposed convolution as a 1x1 convolution to
``4 * out`` channels plus ``DepthToSpace`` (which would let its BatchNorm fold too) made the
session slower: onnxruntime's ``DepthToSpace`` alone cost a fifth of the run.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from training.model import WNet


def _affine_of(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` of an eval-mode BatchNorm: ``bn(x) = scale * x + shift``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return scale, shift


@torch.no_grad()
def fold_batchnorm_into_pointwise(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> None:
    """Make ``conv(x)`` compute ``conv(bn(x))`` (in place); ``conv`` must be an ungrouped 1x1 convolution.

    With ``bn(x) = s * x + t`` per input channel: ``W'[o, i] = W[o, i] * s[i]`` and
    ``b'[o] = b[o] + sum_i W[o, i] * t[i]``.
    """
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding not in ((0, 0), "valid"):
        raise ValueError(f"can only fold a BatchNorm into an ungrouped 1x1 convolution, got {conv}")
    scale, shift = _affine_of(bn)
    weight = conv.weight[:, :, 0, 0]  # (out, in)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    conv.bias = nn.Parameter(bias + weight @ shift)
    conv.weight.mul_(scale[None, :, None, None])


def _pointwise_of(upsampler: nn.Module) -> nn.Conv2d | None:
    """The 1x1 convolution a BatchNorm before ``upsampler`` folds into exactly, if there is one.

    Only ``resize_conv`` (bilinear resize, then 1x1 conv) has one: bilinear weights sum to
    one, so the resize commutes with a per-channel affine map.
    """
    if isinstance(upsampler, nn.Sequential) and len(upsampler) == 2:
        first, second = upsampler
        if isinstance(first, nn.Upsample) and first.mode == "bilinear" and isinstance(second, nn.Conv2d):
            return second
    return None


def _fold_module_output(module: nn.Sequential, *convs: nn.Conv2d) -> None:
    """Fold the last BatchNorm of a W-Net module into each of ``convs`` (all the convolutions
    that read the module's output) and drop it from the module."""
    index = max(i for i, layer in enumerate(module) if isinstance(layer, nn.BatchNorm2d))
    for conv in convs:
        fold_batchnorm_into_pointwise(module[index], conv)
    module[index] = nn.Identity()


def fuse_encoder(encoder: nn.Module) -> nn.Module:
    """Fold BatchNorms into following 1x1 convolutions of a U-Net (in place) and return it.

    ``encoder`` is a :class:`training.model.UNet` in eval mode. The last BatchNorm of the
    last up module always folds into the head (and into the boundary head, which reads the
    same features); those feeding a ``resize_conv`` upsampler fold into its convolution. The
    skip connections are untouched: a down module's output feeds both a skip and a
    max-pooling, so its BatchNorm stays.
    """
    if encoder.training:
        raise ValueError("fuse_encoder needs an eval-mode network (BatchNorm running statistics)")
    feeding = [encoder.down[-1], *encoder.up[:-1]]  # module i feeds upsampler i
    for module, upsampler in zip(feeding, encoder.upsample, strict=True):
        conv = _pointwise_of(upsampler)
        if conv is not None:
            _fold_module_output(module, conv)
    heads = [encoder.head] if encoder.boundary_head is None else [encoder.head, encoder.boundary_head]
    _fold_module_output(encoder.up[-1], *heads)
    return encoder


class ExportableEncoder(nn.Module):
    """What the ONNX graph computes: RGB 0..255 (N, 3, H, W) -> softmax probabilities (N, K, H, W),
    and for a network with a boundary head also the boundary map (N, 1, H, W) in [0, 1].

    The same function as :meth:`training.model.WNet.encode_aligned` (or
    :meth:`~training.model.WNet.encode_with_boundaries_aligned`; H and W multiples of
    ``2**depth``), with the softmax spelled out over axis 1 (see the module docstring) and,
    with ``fuse=True``, the encoder rewritten by :func:`fuse_encoder`. Holds a deep copy:
    the given network is not modified.
    """

    def __init__(self, wnet: WNet, *, fuse: bool = True) -> None:
        super().__init__()
        if wnet.training:
            # Exporting a train-mode network would bake batch statistics into the graph.
            raise ValueError("ExportableEncoder needs an eval-mode network (call .eval() first)")
        encoder = copy.deepcopy(wnet.encoder)
        self.encoder = fuse_encoder(encoder) if fuse else encoder
        self.normalize = wnet.normalize
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder.features(self.normalize(images))
        logits = self.encoder.head(features)
        # Stable softmax over K, written out: onnxruntime's Softmax on a non-last axis transposes.
        exp = torch.exp(logits - logits.amax(dim=1, keepdim=True))
        probs = exp / exp.sum(dim=1, keepdim=True)
        if self.encoder.boundary_head is None:
            return probs
        return probs, torch.sigmoid(self.encoder.boundary_head(features))
