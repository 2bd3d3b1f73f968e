"""Checkpoint -> self-describing ONNX encoder (``wnet export``).

The graph computes :meth:`training.model.WNet.encode_aligned`: input ``image`` (N, 3, H, W)
RGB on 0..255, output ``probs`` (N, K, H, W) softmax; batch, height and width are dynamic. A
network with a boundary head gets a second output ``boundaries`` (N, 1, H, W) in [0, 1]
(:meth:`~training.model.WNet.encode_with_boundaries_aligned`), listed in the metadata's
``wnet.outputs``.
H and W must be multiples of ``2**depth``: the *runtime* pads (``numpy.pad`` reflect, bottom
and right) and crops, as the metadata states. Padding inside the graph was not chosen: the
repeated reflection numpy does for pads wider than the image needs a data-dependent loop,
and a single ONNX ``Pad`` (reflect) would differ from training for tiny images.

Exporter: the TorchScript-based one (``dynamo=False``) by default, chosen by measurement on
the quarter-width encoder (docs/experiments.md): it writes the file many times faster than the
dynamo-based one, and the two graphs run equally fast in onnxruntime (with the rewrites of
:mod:`export.optimize`, ``benchmarks/bench_inference.py --variants``). The dynamo exporter also needs H
and W declared as multiples of ``2**depth``. torch deprecates the TorchScript exporter, so
``exporter="dynamo"`` is kept working and tested.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from export.optimize import ExportableEncoder
from export.verify import default_sizes, max_abs_difference
from training.checkpoint import model_from_checkpoint, read_checkpoint
from training.model import WNet
from wnetcli import __version__
from wnetcli.atomic import atomic_path
from wnetcli.errors import TRAIN_EXTRA_HINT, DependencyError, InputError, ModelError
from wnetcli.model_info import BOUNDARIES_NAME, INPUT_NAME, OUTPUT_NAME, ModelInfo, file_sha256

EXPORTERS = ("torchscript", "dynamo")
#: Export fails (and writes nothing) when onnxruntime and PyTorch differ by more than this.
TOLERANCE = {False: 1e-4, True: 1e-2}  # keyed by fp16
# Oldest opset accepted per exporter: the dynamo exporter writes 18 and newer; 13 is the
# oldest the tests export with TorchScript.
MIN_OPSET = {"torchscript": 13, "dynamo": 18}


@dataclass(frozen=True)
class ExportOptions:
    """How to export (the flags of ``wnet export``).

    Attributes:
        opset: ONNX opset; ``None`` picks :func:`default_opset` for the exporter.
        fp16: weights and compute in float16 (input and output float16 too; for GPUs).
        exporter: ``"torchscript"`` (default, see the module docstring) or ``"dynamo"``.
        fuse: apply the exact speed rewrites of :mod:`export.optimize` (BatchNorm folding).
        verify_sizes: (H, W) of the random test images, any sizes (padded like the runtime);
            ``None``: :func:`export.verify.default_sizes` of the model.
        verify_batch: images per verification batch.
        short_side: the scale ``wnet segment`` runs the network at
            (:attr:`wnetcli.model_info.ModelInfo.short_side`); ``None``: the training run's
            ``max_side``, the scale it learnt at; 0: every image at its own size.
        tolerance: the largest |onnxruntime - PyTorch| probability difference accepted on the
            random test images; ``None``: 1e-4 (1e-2 with ``fp16``). A confident network
            (large logits) turns float32 rounding, about 1e-6 of the activations, into
            larger probability differences where two classes nearly tie.
    """

    opset: int | None = None
    fp16: bool = False
    exporter: str = "torchscript"
    fuse: bool = True
    verify_sizes: tuple[tuple[int, int], ...] | None = None
    verify_batch: int = 2
    short_side: int | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.tolerance is not None and not 0 < self.tolerance < 1:
            raise InputError(f"tolerance must be in (0, 1), got {self.tolerance}")
        if self.exporter not in EXPORTERS:
            raise InputError(f"exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if self.opset is not None:
            low, high = MIN_OPSET[self.exporter], exporter_max_opset(self.exporter)
            if not low <= self.opset <= high:
                raise InputError(f"--opset for the {self.exporter} exporter must be in {low}..{high}, got {self.opset}")
        if self.short_side is not None and self.short_side < 0:
            raise InputError(f"short_side must be at least 0 (0: native size), got {self.short_side}")
        if self.verify_sizes == () or self.verify_batch < 1:
            raise InputError("verification needs at least one size and a batch of at least 1")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how well it matches PyTorch.

    Attributes:
        path: the ONNX file.
        opset: its ONNX opset.
        exporter: ``"torchscript"`` or ``"dynamo"``.
        fp16: whether the graph is float16.
        max_abs_diff: ``"HxW"`` -> max absolute difference of the probabilities (and of the
            boundary map, for a two-output graph) between the onnxruntime CPU session and
            :meth:`training.model.WNet.encode` (float32).
        tolerance: the limit the differences were checked against.
        seconds: wall time of the whole export, verification included.
        info: the metadata written into the file.
    """

    path: Path
    opset: int
    exporter: str
    fp16: bool
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.0
    seconds: float = 0.0
    info: ModelInfo | None = None


def exporter_max_opset(exporter: str) -> int:
    """Newest opset the installed torch's ``exporter`` writes."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - private module moved; these are torch 2.13's values
        return 20 if exporter == "torchscript" else 23
    if exporter == "torchscript":
        return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    return _constants.ONNX_MAX_OPSET


def onnxruntime_max_opset() -> int:
    """Newest default-domain opset both the installed onnx and onnxruntime know (probed with a 1-node model)."""
    import onnxruntime as ort
    from onnx import TensorProto, defs, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    result = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [value], [result])
    for opset in range(defs.onnx_opset_version(), 6, -1):
        opsets = [helper.make_opsetid("", opset)]
        # The oldest IR version for the opset: onnx's newest IR may be newer than onnxruntime reads.
        model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
        with contextlib.suppress(Exception):  # onnxruntime raises untyped errors for unknown opsets
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return opset
    raise ModelError("this onnxruntime accepts no ONNX opset >= 7")


def default_opset(exporter: str) -> int:
    """The newest opset both ``exporter`` and onnxruntime support (20 and 23 with torch 2.13).

    Newest is as fast as older ones here: on the quarter-width encoder the opsets measured
    ran within noise of each other, for both exporters (``benchmarks/bench_inference.py
    --variants``; docs/experiments.md).
    """
    return min(exporter_max_opset(exporter), onnxruntime_max_opset())


def require_onnx() -> None:
    """Raise :class:`DependencyError` with an install hint when onnx or onnxruntime is missing."""
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError as exc:
            raise DependencyError(f"{name} is not installed ({exc}); {TRAIN_EXTRA_HINT}") from exc


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Raise the ``logging`` level of ``name`` to errors for the duration of the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torch_export(module: torch.nn.Module, example: torch.Tensor, path: Path, *, exporter: str, opset: int,
                  multiple: int, outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    """Run torch's ONNX exporter on ``module`` with dynamic N, H, W, writing ``path``; ``outputs``
    names the module's outputs."""
    with warnings.catch_warnings(), torch.no_grad(), _quiet_logger("torch.onnx"):
        # The TorchScript exporter warns that it is deprecated on every call (see module
        # docstring); the dynamo one logs that torchvision's ops are not registered.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if exporter == "torchscript":
            axes = {0: "N", 2: "H", 3: "W"}
            torch.onnx.export(
                module, (example,), str(path), input_names=[INPUT_NAME], output_names=list(outputs),
                dynamic_axes={name: axes for name in (INPUT_NAME, *outputs)}, opset_version=opset, dynamo=False,
            )
            return
        dim = torch.export.Dim
        # H and W are declared as multiples of the pooling factor so that torch.export can
        # prove the max-poolings and skip concatenations line up for every allowed size.
        shapes = ({0: dim("N", min=1, max=4096), 2: multiple * dim("h", min=1, max=4096),
                   3: multiple * dim("w", min=1, max=4096)},)
        torch.onnx.export(
            module, (example,), str(path), input_names=[INPUT_NAME], output_names=list(outputs),
            dynamic_shapes=shapes, opset_version=opset, dynamo=True, external_data=False, verbose=False,
        )


def _annotate(path: Path, info: ModelInfo, *, exporter: str, fused: bool) -> None:
    """Write ``info`` into ``metadata_props`` (plus the exporter), run ``onnx.checker``, save."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    extra = {"wnet.exporter": exporter, "wnet.fused_batchnorm": "1" if fused else "0"}
    for key, value in {**info.to_metadata(), **extra}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "wnet", __version__
    boundaries = f", {BOUNDARIES_NAME} (N,1,H,W) in [0,1]" if BOUNDARIES_NAME in info.outputs else ""
    model.doc_string = (
        f"W-Net encoder: {INPUT_NAME} float (N,3,H,W) RGB 0..255 -> {OUTPUT_NAME} (N,{info.k},H,W) softmax"
        f"{boundaries}; H and W must be multiples of {info.pad_multiple} (pad bottom/right with numpy reflect, "
        f"then crop)."
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from exc
    onnx.save(model, str(path))


def model_outputs(wnet: WNet) -> tuple[str, ...]:
    """The outputs of ``wnet``'s export: ``("probs", "boundaries")`` with a boundary head, else ``("probs",)``."""
    return (OUTPUT_NAME, BOUNDARIES_NAME) if wnet.config.boundary_head else (OUTPUT_NAME,)


def _output_path(checkpoint: Path, out: str | os.PathLike[str] | None) -> Path:
    target = Path(out) if out is not None else checkpoint.with_suffix(".onnx")
    if target.is_dir():
        raise InputError(f"--out {target} is a directory; give a file name such as {target / 'model.onnx'}")
    if target.resolve() == checkpoint.resolve():
        raise InputError(f"--out {target} would overwrite the checkpoint")
    return target


def export_model(wnet: WNet, path: Path, info: ModelInfo, options: ExportOptions,
                 progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Export an eval-mode W-Net's encoder to ``path`` (atomically) and verify it.

    Parameters
    ----------
    wnet : WNet
        The network, in eval mode (not modified).
    path : Path
        Where the ``.onnx`` file goes; nothing appears there unless verification passes.
    info : ModelInfo
        Metadata to write (its ``fp16`` must match ``options.fp16``, its ``outputs`` the
        network: ``("probs", "boundaries")`` with a boundary head, else ``("probs",)``).
    options : ExportOptions
    progress : callable (done, total), optional
        Called after each stage: export, check, then one call per verification size.

    Raises
    ------
    ModelError
        When torch cannot export, ``onnx.checker`` rejects the graph or onnxruntime differs
        from PyTorch by more than :data:`TOLERANCE`.
    InputError
        When ``path`` cannot be written.
    """
    start = time.perf_counter()
    if info.fp16 != options.fp16:
        raise ValueError(f"info.fp16={info.fp16} contradicts options.fp16={options.fp16}")
    if info.outputs != model_outputs(wnet):
        raise ValueError(f"info.outputs={info.outputs} contradicts the network's {model_outputs(wnet)}")
    require_onnx()
    opset = options.opset or default_opset(options.exporter)
    sizes = options.verify_sizes or default_sizes(wnet.config.pad_multiple)
    total = 2 + len(sizes)
    report = progress or (lambda done, total: None)
    module = ExportableEncoder(wnet, fuse=options.fuse)
    multiple = wnet.config.pad_multiple
    example = torch.rand(2, 3, 2 * multiple, 2 * multiple) * 255  # batch 2: torch.export specialises 1
    if options.fp16:
        module, example = module.half(), example.half()
    tolerance = TOLERANCE[options.fp16] if options.tolerance is None else options.tolerance
    try:
        with atomic_path(path) as tmp:
            try:
                _torch_export(module, example, tmp, exporter=options.exporter, opset=opset, multiple=multiple,
                              outputs=info.outputs)
            except ImportError as exc:  # the dynamo exporter needs onnxscript
                raise DependencyError(f"the {options.exporter} exporter needs {exc.name or exc}; "
                                      f"{TRAIN_EXTRA_HINT}") from exc
            except (RuntimeError, TypeError, ValueError) as exc:  # torch's exporters raise these for graphs
                raise ModelError(f"torch could not export the encoder: {str(exc).strip().splitlines()[0]}") from exc
            report(1, total)
            _annotate(tmp, info, exporter=options.exporter, fused=options.fuse)
            report(2, total)
            diffs = {}
            for done, (height, width) in enumerate(sizes, start=3):
                diffs[f"{height}x{width}"] = max_abs_difference(
                    tmp, wnet, height, width, batch=options.verify_batch, fp16=options.fp16
                )
                report(done, total)
            worst = max(diffs.values())
            if not worst <= tolerance:  # also catches NaN
                raise ModelError(
                    f"onnxruntime differs from PyTorch by {worst:.3g} (> {tolerance:g}) at "
                    f"{', '.join(f'{size}: {d:.3g}' for size, d in diffs.items())}; nothing written"
                )
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return ExportResult(
        path=path, opset=opset, exporter=options.exporter, fp16=options.fp16, max_abs_diff=diffs,
        tolerance=tolerance, seconds=time.perf_counter() - start, info=info,
    )


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                options: ExportOptions | None = None,
                progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Turn a training checkpoint into the ONNX file ``wnet segment`` runs.

    Parameters
    ----------
    checkpoint : path
        A file written by :func:`training.checkpoint.save_checkpoint`.
    out : path, optional
        The ``.onnx`` file; default: beside the checkpoint, same stem.
    options : ExportOptions, optional
    progress : callable (done, total), optional
        See :func:`export_model`.

    Returns
    -------
    ExportResult

    Raises
    ------
    InputError
        Missing checkpoint, output is a directory or unwritable.
    ModelError
        Not a checkpoint, another format version, missing keys, weights that do not match
        the config, or an export that fails its verification.
    """
    options = options or ExportOptions()
    source = Path(checkpoint)
    target = _output_path(source, out)
    payload = read_checkpoint(source)
    wnet = model_from_checkpoint(payload, source=str(source)).eval()
    info = ModelInfo(
        k=wnet.config.k,
        pad_multiple=wnet.config.pad_multiple,
        fp16=options.fp16,
        model_config=wnet.config.to_dict(),
        package_version=__version__,
        checkpoint_sha256=file_sha256(source),
        training_data=str(payload.get("data", "")),
        step=int(payload["step"]),
        short_side=(
            int((payload.get("train_config") or {}).get("max_side", 0) or 0)
            if options.short_side is None
            else options.short_side
        ),
        outputs=model_outputs(wnet),
    )
    return export_model(wnet, target, info, options, progress)
