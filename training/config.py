"""Configuration dataclasses for the W-Net model (no torch import here).

The model config is stored in every checkpoint and every exported ONNX file, so that
loading rebuilds exactly the network that was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from wnetcli.errors import InputError

UPSAMPLING_MODES = ("transposed", "transposed_bilinear", "resize_conv")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a W-Net (Xia & Kulis 2017, section 3).

    Attributes:
        k: number of segmentation classes K (channels of the encoder's softmax).
        base_width: channels of the first module; doubled at every pooling (64 in the paper,
            giving 64, 128, 256, 512, 1024).
        depth: number of 2x2 max-poolings (4 in the paper, so 9 modules per U-Net). Input
            height and width are padded to a multiple of ``2**depth``.
        separable: depthwise-separable 3x3 convolutions in every module except the first and
            last of each U-Net, as in the paper; False uses ordinary convolutions throughout.
        upsampling: ``"transposed"`` (2x2 stride-2 transposed conv, the paper),
            ``"transposed_bilinear"`` (4x4 stride-2 transposed conv initialised as bilinear
            interpolation) or ``"resize_conv"`` (bilinear resize then 1x1 conv: no checkerboard
            artefacts, fewer parameters).
        skip: U-Net skip connections; False is the ablation without them.
        dropout: dropout probability after each module (changed during training by the
            schedule through :meth:`training.model.WNet.set_dropout`).
    """

    k: int = 20
    base_width: int = 64
    depth: int = 4
    separable: bool = True
    upsampling: str = "transposed"
    skip: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise InputError(f"k must be at least 2, got {self.k}")
        if self.base_width < 1:
            raise InputError(f"base_width must be positive, got {self.base_width}")
        if not 1 <= self.depth <= 6:
            raise InputError(f"depth must be between 1 and 6, got {self.depth}")
        if self.upsampling not in UPSAMPLING_MODES:
            raise InputError(f"upsampling must be one of {', '.join(UPSAMPLING_MODES)}, got {self.upsampling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def pad_multiple(self) -> int:
        """Height and width fed to the network must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def to_dict(self) -> dict:
        """Plain-JSON form, stored in checkpoints and ONNX metadata."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Rebuild from :meth:`to_dict`; unknown keys are an error (a newer wnet wrote them)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**values)
