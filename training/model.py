"""W-Net: two U-Nets in a row (Xia & Kulis 2017, "W-Net: A Deep Model for Fully
Unsupervised Image Segmentation", arXiv:1711.08506).

The U-Net is written once (:class:`UNet`, composed in loops over a channel list) and the
W-Net is two instances of it: the encoder maps RGB to a K-way softmax, the decoder maps
that soft segmentation back to RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from wnetcli.errors import ModelError

# The network sees inputs scaled to [-1, 1]; callers always pass RGB on 0..255.
INPUT_CENTER = 127.5
INPUT_SCALE = 127.5


def conv3x3(in_channels: int, out_channels: int, *, separable: bool, padding_mode: str = "zeros") -> nn.Module:
    """A 3x3 convolution, padding 1 (``"zeros"`` or ``"reflect"``); depthwise-separable
    (depthwise 3x3 + pointwise 1x1) if asked."""
    if not separable:
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode=padding_mode)
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels, padding_mode=padding_mode),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


class Module(nn.Sequential):
    """One W-Net module: two (3x3 conv, ReLU, BatchNorm) in a row, then dropout.

    The paper puts ReLU before batch normalisation; we keep its order.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, separable: bool, dropout: float, padding_mode: str = "zeros"
    ) -> None:
        layers: list[nn.Module] = []
        for conv_in in (in_channels, out_channels):
            layers += [
                conv3x3(conv_in, out_channels, separable=separable, padding_mode=padding_mode),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(out_channels),
            ]
        layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


def _bilinear_upsampling_weight(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """Transposed-conv weight (in, out, k, k) that upsamples bilinearly by 2.

    Input channel ``i`` feeds output channel ``i % out_channels``; each output averages the
    inputs that feed it, so a constant input stays constant.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 0.5 if kernel_size % 2 == 0 else factor - 1
    grid = torch.arange(kernel_size, dtype=torch.float32)
    profile = 1 - (grid - center).abs() / factor
    kernel = profile[:, None] * profile[None, :]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    share = out_channels / in_channels
    for i in range(in_channels):
        weight[i, i % out_channels] = kernel * share
    return weight


def make_upsampler(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """2x upsampling from ``in_channels`` to ``out_channels`` (see :class:`ModelConfig`)."""
    if mode == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    if mode == "transposed_bilinear":
        layer = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
        with torch.no_grad():
            layer.weight.copy_(_bilinear_upsampling_weight(in_channels, out_channels, 4))
            layer.bias.zero_()
        return layer
    if mode == "resize_conv":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )
    raise ValueError(f"unknown upsampling mode {mode!r}")


class UNet(nn.Module):
    """U-Net of ``2 * depth + 1`` modules with a final 1x1 convolution.

    Channels ``base_width * 2**i`` for ``i = 0..depth`` down the contracting path (2x2 max
    pooling between modules), back up with 2x upsampling that halves the channels and (with
    ``skip``) concatenates the contracting module's output. The first and last modules use
    ordinary convolutions, the others depthwise-separable ones when ``separable``.

    Input (N, in_channels, H, W) float with H and W multiples of ``2**depth``; output
    (N, out_channels, H, W) logits (no activation): ``head(features(x))``. With
    ``boundary_head``, a second 1x1 convolution ``boundary_head`` maps the same features to
    one channel of boundary logits.
    """

    def __init__(self, in_channels: int, out_channels: int, config: ModelConfig, *,
                 boundary_head: bool = False) -> None:
        super().__init__()
        widths = [config.base_width * 2**level for level in range(config.depth + 1)]
        block = {"separable": config.separable, "dropout": config.dropout, "padding_mode": config.padding_mode}
        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            source = in_channels if level == 0 else widths[level - 1]
            self.down.append(Module(source, width, **{**block, "separable": config.separable and level > 0}))
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(config.depth)):
            width = widths[level]
            self.upsample.append(make_upsampler(widths[level + 1], width, config.upsampling))
            merged = 2 * width if config.skip else width
            self.up.append(Module(merged, width, **{**block, "separable": config.separable and level > 0}))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        # Registered after the head, so that the parameter order of a U-Net without it (and
        # with it, the optimizer states of its other parameters) is unchanged.
        self.boundary_head = nn.Conv2d(widths[0], 1, kernel_size=1) if boundary_head else None
        self.skip = config.skip

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last up module's output, which the heads read: (N, base_width, H, W)."""
        skips = []
        for level, module in enumerate(self.down):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = module(x)
            skips.append(x)
        skips.pop()  # the bottom module's output feeds the first upsampler, not a skip
        for upsample, module in zip(self.upsample, self.up, strict=True):
            x = upsample(x)
            if self.skip:
                x = torch.cat([skips.pop(), x], dim=1)
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def pad_to_multiple(images: torch.Tensor, multiple: int, min_side: int = 0) -> torch.Tensor:
    """Pad (N, C, H, W) at the bottom and right to multiples of ``multiple``, each side at least ``min_side``.

    ``min_side`` must be a multiple of ``multiple`` (``ModelConfig.min_padded_side``). Mirror
    padding without repeating the edge (``numpy.pad(mode="reflect")``); where the pad
    is wider than the image it reflects repeatedly, exactly as numpy does, so that the ONNX
    runtime's NumPy padding gives the same input as this function.
    """
    height, width = images.shape[-2:]
    pad_h = max((-height) % multiple, min_side - height)
    pad_w = max((-width) % multiple, min_side - width)
    while pad_h > 0 or pad_w > 0:
        # torch's reflect padding must be narrower than the current size: go in chunks.
        step_h = min(pad_h, images.shape[-2] - 1)
        step_w = min(pad_w, images.shape[-1] - 1)
        if step_h == 0 and step_w == 0:  # 1-pixel side: reflection is a copy of the edge
            return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        images = F.pad(images, (0, step_w, 0, step_h), mode="reflect")
        pad_h -= step_h
        pad_w -= step_w
    return images


class WNet(nn.Module):
    """The W-Net: encoder U-Net (RGB -> K-way softmax) and decoder U-Net (K -> RGB).

    All public methods take RGB images as float tensors (N, 3, H, W) on the 0..255 scale,
    of any H and W (padded internally to a multiple of ``config.pad_multiple``, at least
    ``config.min_padded_side``, and cropped).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = UNet(3, config.k, config, boundary_head=config.boundary_head)
        self.decoder = UNet(config.k, 3, config)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 -> the network's input scale [-1, 1]."""
        return (images - INPUT_CENTER) / INPUT_SCALE

    def _padded(self, images: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(images, self.config.pad_multiple, self.config.min_padded_side)

    def encode_aligned(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (N, K, H, W) for images whose H, W are multiples of ``pad_multiple``.

        This is the function the ONNX export computes (the runtime pads beforehand).
        """
        return torch.softmax(self.encoder(self.normalize(images)), dim=1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Soft segmentation: RGB (N, 3, H, W) on 0..255 -> probabilities (N, K, H, W), summing to 1 over K."""
        height, width = images.shape[-2:]
        return self.encode_aligned(self._padded(images))[..., :height, :width]

    def _boundary_features(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder.boundary_head is None:
            raise ModelError("this W-Net has no boundary head (its model config has boundary_head = false)")
        return self.encoder.features(self.normalize(images))

    def encode_with_boundaries_aligned(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode_with_boundaries` for H, W multiples of ``pad_multiple`` (what a
        two-output ONNX export computes)."""
        features = self._boundary_features(images)
        probs = torch.softmax(self.encoder.head(features), dim=1)
        return probs, torch.sigmoid(self.encoder.boundary_head(features))

    def encode_with_boundaries(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft segmentation and boundary map from one encoder pass (needs ``config.boundary_head``).

        Args:
            images: RGB (N, 3, H, W) float on 0..255, any H and W.

        Returns:
            probs: (N, K, H, W) softmax probabilities, as :meth:`encode`.
            boundaries: (N, 1, H, W) in [0, 1]: the sigmoid of the boundary head.

        Raises:
            ModelError: the network has no boundary head.
        """
        height, width = images.shape[-2:]
        probs, boundaries = self.encode_with_boundaries_aligned(self._padded(images))
        return probs[..., :height, :width], boundaries[..., :height, :width]

    def boundary_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Boundary logits (N, 1, H, W) of RGB (N, 3, H, W) on 0..255, any H and W (the boundary
        update trains on these: the loss takes logits for a stable log-sigmoid).

        Raises:
            ModelError: the network has no boundary head.
        """
        height, width = images.shape[-2:]
        logits = self.encoder.boundary_head(self._boundary_features(self._padded(images)))
        return logits[..., :height, :width]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and decode.

        Returns:
            probs: (N, K, H, W) softmax probabilities.
            reconstruction: (N, 3, H, W) in the network's normalised scale (compare with
                :meth:`normalize` of the input, or map back with ``* 127.5 + 127.5``).
        """
        height, width = images.shape[-2:]
        probs = self.encode_aligned(self._padded(images))
        reconstruction = self.decoder(probs)
        return probs[..., :height, :width], reconstruction[..., :height, :width]

    def set_dropout(self, probability: float) -> None:
        """Change the dropout probability of every module (the training schedule uses this)."""
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {probability}")
        for layer in self.modules():
            if isinstance(layer, nn.Dropout):
                layer.p = probability


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
