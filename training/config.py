"""Configuration dataclasses for the W-Net model (no torch import here).

The model config is stored in every checkpoint and every exported ONNX file, so that
loading rebuilds exactly the network that was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from wnetcli.errors import InputError
from wnetcli.model_info import min_padded_side
from wnetcli.options import read_settings_file

UPSAMPLING_MODES = ("transposed", "transposed_bilinear", "resize_conv")
PADDING_MODES = ("zeros", "reflect")


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
        padding_mode: how the 3x3 convolutions pad their input: ``"zeros"`` (the paper, and
            PyTorch's default) or ``"reflect"``. Zero padding marks the image border at every
            scale, which lets the network give classes to image positions (corners, the top
            strip) rather than to content; reflection hides most of that signal.
        boundary_head: a second head on the encoder: a 1x1 convolution from the features that
            feed the K-way head to one channel, then a sigmoid, giving a boundary map
            (N, 1, H, W) in [0, 1] (:meth:`training.model.WNet.encode_with_boundaries`),
            trained on a teacher hierarchy's boundaries (``TrainConfig.boundaries_from``).
    """

    k: int = 20
    base_width: int = 64
    depth: int = 4
    separable: bool = True
    upsampling: str = "transposed"
    skip: bool = True
    dropout: float = 0.0
    padding_mode: str = "zeros"
    boundary_head: bool = False

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
        if self.padding_mode not in PADDING_MODES:
            raise InputError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {self.padding_mode!r}")

    @property
    def pad_multiple(self) -> int:
        """Height and width fed to the network must be multiples of this (``2**depth``)."""
        return 2**self.depth

    @property
    def min_padded_side(self) -> int:
        """Smallest H and W the network accepts (:func:`wnetcli.model_info.min_padded_side`)."""
        return min_padded_side(self.pad_multiple, self.padding_mode)

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


OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``RUN_DIR/config.json`` and in checkpoints).

    The paper (Xia & Kulis 2017, section 4) trains on VOC2012 at 224 x 224, minibatch 10, SGD
    with learning rate 0.003, dropout 0.65, for 50,000 iterations, and says the rate is divided by
    ten every 1,000 iterations. Taken literally that leaves a rate of 3e-53 after 50 decays, i.e.
    learning stops after a few thousand steps, so the ``paper`` preset follows the public
    TensorFlow reading instead: halve the rate every 10,000 iterations, dropout 0.65 for the
    first half of the run and 0.3 afterwards. Both are configurable: ``lr_decay_every=1000,
    lr_decay_factor=0.1`` is the literal text.

    Attributes:
        model: the network (``model.dropout`` is the dropout of the first phase).
        iterations: minibatches in the whole run (each one is two updates, Algorithm 1).
        batch_size: images per minibatch (per process under ``torchrun``).
        size: side of the square random crops, in pixels.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``; one instance over the encoder's
            parameters (N-cut update) and one over all parameters (reconstruction update).
        lr, momentum, weight_decay: optimizer settings.
        lr_decay_every, lr_decay_factor: step decay, ``lr * factor ** (step // every)``.
        dropout_late: dropout from ``dropout_switch_step`` on (``model.dropout`` before).
        dropout_switch_step: the step at which the dropout changes; an absolute step (not a
            fraction) so that extending ``iterations`` on ``--resume`` does not move it.
        ncut_weight, recon_weight: multipliers of the two losses. N-cut taking over (the
            segmentation collapses to a few bright/dark regions) is countered by a larger
            ``recon_weight``.
        boundary_weight: multiplier of a third update per step, of the encoder and its boundary
            head on the class-balanced boundary loss (:func:`training.losses.balanced_bce_loss`)
            against the teacher's targets; 0: none. Needs ``boundaries_from`` and
            ``model.boundary_head``. With it, ``ncut_weight`` and ``recon_weight`` may both be 0
            (boundary-only fine-tuning). Like the other two, it scales the learning rate.
        boundaries_from: the teacher: the hierarchy recipe whose ucm gives the boundary targets
            (:func:`training.teacher.hierarchy_ucm2`): a named recipe (``"default"``,
            ``"fast"``, ``"network"``) or a recipe file; ``""``: no boundary training.
        teacher_mirror: average the teacher's ucm with that of the left-right mirrored image
            (mirrored back), which halves the teacher's left-right asymmetries.
        teacher_model: the exported model (.onnx) that a teacher recipe's network cues read
            (a later round of self-training: the hierarchy with the boundaries learnt before);
            ``""``: the shipped default model. Unused when the teacher reads no network.
        ncut_radius, ncut_sigma_i, ncut_sigma_x: the soft N-cut's affinity (paper: 5, 10, 4;
            ``sigma_i`` on the 0..255 scale).
        min_crop_area: random resized crops cover between this fraction of the image and all of it.
        flip: random horizontal flips.
        max_side: images are downscaled once on loading so that their shorter side is at most
            this many pixels (0: never); keeps the in-memory cache and decoding cheap.
        seed: seeds the initial weights, dropout and every step's data (``seed``, step, rank).
        init_from: a checkpoint whose W-Net weights start the run instead of the seeded random
            ones (fine-tuning; ``""``: none), or an exported ``.onnx`` (encoder only: the decoder
            and a boundary head the file lacks keep their seeded initialisation; see
            :func:`training.onnx_init.load_onnx_encoder`). Its network must have the same layer
            shapes; settings that do not change them (``padding_mode``, ``dropout``) may differ.
            The optimizers start fresh at step 0.
        checkpoint_every, log_every, sample_every: cadence in steps (0: only at the end).
        checkpoint_minutes: also write the checkpoint once this many minutes of training have
            passed since the last one (0: never on time), so that a run killed outright
            (``kill -9``, a crash) loses at most that much, however long its steps.
        workers: data-loading processes for data sets too big to hold in memory.
        cache_limit: data sets of at most this many images are decoded once into memory.
        amp: bfloat16 autocast on CUDA (the losses stay float32); ignored on CPU.
        channels_last: channels-last memory format on CUDA; ignored on CPU.
    """

    model: ModelConfig = ModelConfig(k=20, base_width=16, dropout=0.65)
    iterations: int = 5000
    batch_size: int = 4
    size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay_every: int = 1000
    lr_decay_factor: float = 0.5
    dropout_late: float = 0.3
    dropout_switch_step: int = 2500
    ncut_weight: float = 1.0
    recon_weight: float = 1.0
    boundary_weight: float = 0.0
    boundaries_from: str = ""
    teacher_mirror: bool = True
    teacher_model: str = ""
    ncut_radius: float = 5.0
    ncut_sigma_i: float = 10.0
    ncut_sigma_x: float = 4.0
    min_crop_area: float = 0.25
    flip: bool = True
    max_side: int = 448
    seed: int = 0
    init_from: str = ""
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    log_every: int = 10
    sample_every: int = 500
    workers: int = 2
    cache_limit: int = 2000
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        positive = ("iterations", "batch_size", "size", "lr", "lr_decay_every", "ncut_radius", "ncut_sigma_i",
                    "ncut_sigma_x")
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise InputError(f"{name} must be positive, got {value}")
        non_negative = ("momentum", "weight_decay", "ncut_weight", "recon_weight", "boundary_weight",
                        "dropout_switch_step", "max_side", "seed", "checkpoint_every", "checkpoint_minutes",
                        "log_every", "sample_every", "workers", "cache_limit")
        for name in non_negative:
            value = getattr(self, name)
            if value < 0:
                raise InputError(f"{name} must be at least 0, got {value}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise InputError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if not 0.0 <= self.dropout_late < 1.0:
            raise InputError(f"dropout_late must be in [0, 1), got {self.dropout_late}")
        if not 0.0 < self.min_crop_area <= 1.0:
            raise InputError(f"min_crop_area must be in (0, 1], got {self.min_crop_area}")
        if self.ncut_weight == 0 and self.recon_weight == 0 and self.boundary_weight == 0:
            raise InputError("ncut_weight, recon_weight and boundary_weight cannot all be 0")
        if self.boundary_weight > 0 and not self.boundaries_from:
            raise InputError("boundary_weight > 0 needs boundaries_from (the teacher recipe)")
        if self.boundary_weight > 0 and not self.model.boundary_head:
            raise InputError("boundary_weight > 0 needs model.boundary_head = true")

    def lr_at(self, step: int) -> float:
        """Learning rate of the update made at ``step`` (0-based): step decay."""
        return self.lr * self.lr_decay_factor ** (step // self.lr_decay_every)

    def dropout_at(self, step: int) -> float:
        """Dropout probability used at ``step`` (0-based)."""
        return self.model.dropout if step < self.dropout_switch_step else self.dropout_late

    def to_dict(self) -> dict:
        """Plain-JSON form (nested ``model``), as written to ``config.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, *, base: TrainConfig | None = None) -> TrainConfig:
        """Build from a dict, on top of ``base`` (default: the defaults).

        Model fields may be given in a nested ``model`` table or flat (``k``, ``base_width``,
        ...); the two sets of names do not overlap. Unknown keys are an :class:`InputError`.
        """
        base = base or cls()
        values = dict(values)
        model_values = dict(values.pop("model", None) or {})
        if not isinstance(model_values, dict):
            raise InputError("'model' must be a table of model settings")
        model_names = {f.name for f in fields(ModelConfig)}
        train_names = {f.name for f in fields(cls)} - {"model"}
        for name in list(values):
            if name in model_names:
                model_values[name] = values.pop(name)
        unknown = (set(values) - train_names) | (set(model_values) - model_names)
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        for name, value in values.items():
            expected = type(getattr(base, name))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                values[name] = float(value)
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise InputError(f"{name} must be {expected.__name__}, got {value!r}")
        try:
            model = ModelConfig(**{**base.model.to_dict(), **model_values})
            return cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **values, "model": model})
        except TypeError as exc:
            raise InputError(f"invalid training config: {exc}") from exc


#: The two presets of ``wnet train --preset``; flags and ``--config`` override them.
PRESETS: dict[str, TrainConfig] = {
    # The paper's set-up (see TrainConfig's docstring for the learning-rate reading).
    "paper": TrainConfig(
        model=ModelConfig(k=20, base_width=64, depth=4, dropout=0.65),
        iterations=50_000,
        batch_size=10,
        size=224,
        optimizer="sgd",
        lr=0.003,
        momentum=0.9,
        lr_decay_every=10_000,
        lr_decay_factor=0.5,
        dropout_late=0.3,
        dropout_switch_step=25_000,
        max_side=448,
        checkpoint_every=1000,
        sample_every=1000,
    ),
    # Quarter width at 128 x 128: trainable on a CPU in hours rather than weeks. Adam at 1e-3
    # rather than SGD: in short runs (benchmarks/bench_train_step.py --compare-optimizers;
    # docs/experiments.md) Adam lowered the soft N-cut faster and SGD the reconstruction loss.
    # N-cut is the segmentation objective, hence Adam.
    "small": TrainConfig(),
}


def load_config_file(path) -> dict:
    """Read a JSON (``.json``) or TOML (any other suffix) file of training settings as a dict."""
    return read_settings_file(path, "config file")


def with_boundary_defaults(values: dict, base: TrainConfig) -> dict:
    """Settings ``values`` (over ``base``) completed for boundary training.

    A teacher (``boundaries_from``) given without ``boundary_weight`` or ``boundary_head``
    means boundary training: where ``base`` has the weight at 0 it becomes 1.0, and where
    ``base`` has no boundary head one is added. Values given explicitly are kept.
    """
    if not values.get("boundaries_from", base.boundaries_from):
        return values
    model_values = values.get("model") if isinstance(values.get("model"), dict) else {}
    values = dict(values)
    if "boundary_weight" not in values and base.boundary_weight == 0:
        values["boundary_weight"] = 1.0
    if "boundary_head" not in values and "boundary_head" not in model_values and not base.model.boundary_head:
        values["boundary_head"] = True
    return values


def resolve_train_config(preset: str = "small", config_file=None, overrides: dict | None = None) -> TrainConfig:
    """Preset, then ``config_file`` (JSON/TOML), then ``overrides`` (flag values; None entries ignored).

    The file and the flags are applied together, so that a setting checked against another
    (``boundary_weight`` needs ``boundaries_from``) may come from either; then
    :func:`with_boundary_defaults`.
    """
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    config = PRESETS[preset]
    values = load_config_file(config_file) if config_file is not None else {}
    values.update({name: value for name, value in (overrides or {}).items() if value is not None})
    values = with_boundary_defaults(values, config)
    return TrainConfig.from_dict(values, base=config) if values else config
