"""Running an exported W-Net encoder with onnxruntime (no torch).

The ONNX file describes itself (:class:`wnetcli.model_info.ModelInfo`): K, the padding
multiple and whether it takes float16. :class:`OnnxModel` reads that, picks the execution
providers, pads every batch with reflection to the multiple the graph needs and crops the
probabilities back.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even on machines without a GPU
or without the CUDA libraries; a session asked for it then falls back to the CPU after
logging an error. So the provider decision here is made from what the session really got
(``get_providers()``), with the ORT logger raised to errors-only for the probe, and the
decision logic itself (:func:`choose_providers`) is a pure function testable without a GPU.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wnetcli.errors import DependencyError, InputError, ModelError
from wnetcli.model_info import BOUNDARIES_NAME, INPUT_NAME, OUTPUT_NAME, OUTPUT_NAMES, ModelInfo
from wnetcli.ort_options import QUIET_SEVERITY, OrtSettings, onnx_session_options

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ProviderChoice:
    """Which execution providers to ask onnxruntime for, and why.

    Attributes:
        providers: provider names in priority order.
        device: ``"cuda"`` or ``"cpu"``: what the session is expected to run on.
        note: one quiet line for the user when ``auto`` fell back to the CPU, else ``""``.
    """

    providers: tuple[str, ...]
    device: str
    note: str = ""


def cuda_driver_present() -> bool:
    """True when the CUDA driver library (``libcuda.so.1``) can be loaded.

    A cheap first test: without the driver, asking onnxruntime for CUDA can only fail (noisily).
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in {"", "-1"}:
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def choose_providers(
    device: str, available: Sequence[str], cuda_usable: Callable[[], bool]
) -> ProviderChoice:
    """Decide the execution providers for ``device`` (pure logic; the probe is injected).

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        What the user asked for.
    available : sequence of str
        ``onnxruntime.get_available_providers()``: what the installed build supports, not
        what works on this machine.
    cuda_usable : callable () -> bool
        Probe called only when CUDA is a candidate; True when CUDA really works here.

    Returns
    -------
    ProviderChoice

    Raises
    ------
    InputError
        For an unknown ``device``.
    DependencyError
        For ``device="cuda"`` when CUDA is not usable (one line saying why).
    """
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return ProviderChoice((CPU,), "cpu")
    if CUDA not in available:
        if device == "cuda":
            raise DependencyError(
                "--device cuda: this onnxruntime has no CUDA support; install onnxruntime-gpu"
            )
        return ProviderChoice((CPU,), "cpu")
    if cuda_usable():
        return ProviderChoice((CUDA, CPU), "cuda")
    if device == "cuda":
        raise DependencyError(
            "--device cuda: CUDA is not usable here (no GPU, driver or CUDA/cuDNN libraries); "
            "use --device cpu"
        )
    return ProviderChoice((CPU,), "cpu", note="CUDA not usable on this machine; running on the CPU")


def pad_batch(images: np.ndarray, multiple: int, min_side: int = 0) -> np.ndarray:
    """Pad (N, C, H, W) at the bottom and right to multiples of ``multiple``, by reflection.

    Each side becomes at least ``min_side`` (a multiple of ``multiple``:
    :attr:`ModelInfo.min_padded_side`). ``numpy.pad(mode="reflect")`` (the edge is not
    repeated; where the pad is wider than the image it reflects repeatedly; a 1-pixel side is
    copied), the same padding ``training.model.pad_to_multiple`` uses, so that the exported
    graph sees exactly what the trained network saw.
    """
    height, width = images.shape[-2:]
    pad_h = max((-height) % multiple, min_side - height)
    pad_w = max((-width) % multiple, min_side - width)
    if pad_h == 0 and pad_w == 0:
        return images
    return np.pad(images, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a base dependency
        raise DependencyError(f"onnxruntime is not installed ({exc}); pip install onnxruntime-gpu") from exc
    return onnxruntime


def _open_session(ort, path: Path, options, providers: tuple[str, ...]):
    """An onnxruntime session of ``path``, or :class:`ModelError` saying why there is none."""
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty (0 bytes), not an exported model")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        text = str(exc)
        if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
            raise ModelError(f"{path} is not an ONNX model (it cannot be parsed: a truncated or other file?)") from exc
        raise ModelError(f"cannot load model {path}: {text.splitlines()[0] if text else type(exc).__name__}") from exc


def describe_session(session, path: Path) -> ModelInfo:
    """The :class:`ModelInfo` of a loaded session, after checking that it is a wnet export:
    its metadata (:meth:`ModelInfo.from_metadata`) and its input and output names and shapes.

    Raises
    ------
    ModelError
        Naming ``path`` and what is missing.
    """
    meta = session.get_modelmeta().custom_metadata_map
    info = ModelInfo.from_metadata(dict(meta), source=str(path))
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ModelError(
            f"{path} must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}; "
            f"it has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
        )
    shape = inputs[INPUT_NAME].shape
    if len(shape) != 4 or shape[1] not in (3, "3"):
        raise ModelError(f"{path}: input {INPUT_NAME!r} must be (N, 3, H, W), got {shape}")
    return info


def check_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Check that ``path`` is a wnet export that ``segment`` can run, without keeping it loaded.

    It must exist, parse as ONNX, carry the wnet metadata and have the ``image`` input and
    ``probs`` output (:func:`describe_session`). The check opens a CPU session (a few tenths
    of a second), so that a run which will not use the model still refuses a broken one
    before any work.

    Returns
    -------
    ModelInfo

    Raises
    ------
    ModelError
        A missing, empty, unparsable or foreign file, in one line naming it.
    """
    ort = _import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    ort.set_default_logger_severity(QUIET_SEVERITY)
    options = onnx_session_options(1, OrtSettings())
    return describe_session(_open_session(ort, path, options, (CPU,)), path)


class OnnxModel:
    """An exported encoder loaded into an onnxruntime session.

    Parameters
    ----------
    path : Path
        The ``.onnx`` file written by ``wnet export``.
    device : {"auto", "cpu", "cuda"}
        See :func:`choose_providers`.
    threads : int, optional
        Intra-op threads for the CPU provider; ``None`` or 0 lets onnxruntime use every core.
    spinning : bool
        Let onnxruntime's idle threads busy-wait for work (onnxruntime's own default). Off
        (measured faster on a shared 2-core machine, see :mod:`wnetcli.ort_options`), they
        sleep and leave the cores to the post-processing processes running at the same time.

    Attributes
    ----------
    info : ModelInfo
        The model's self-description (K, padding multiple, fp16).
    choice : ProviderChoice
        The providers asked for; :attr:`device` tells what the session really got.
    """

    def __init__(
        self, path: Path, *, device: str = "auto", threads: int | None = None, spinning: bool = False
    ) -> None:
        ort = _import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
        ort.set_default_logger_severity(QUIET_SEVERITY)
        # The measured-fastest settings, shared with the export's verification and benchmarks
        # (all graph optimisations, sequential execution, and no spinning unless asked).
        options = onnx_session_options(threads or 0, OrtSettings(spinning=spinning))

        sessions: dict[tuple[str, ...], object] = {}

        def make_session(providers: tuple[str, ...]):
            if providers not in sessions:
                sessions[providers] = _open_session(ort, path, options, providers)
            return sessions[providers]

        def cuda_usable() -> bool:
            # The real probe: the session says which providers it actually got.
            return cuda_driver_present() and make_session((CUDA, CPU)).get_providers()[0] == CUDA

        self.choice = choose_providers(device, ort.get_available_providers(), cuda_usable)
        self.session = make_session(self.choice.providers)
        self.path = path
        self.info = describe_session(self.session, path)
        self._input_dtype = np.float16 if self.info.fp16 else np.float32

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where the session really runs."""
        return "cuda" if self.session.get_providers()[0] == CUDA else "cpu"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs this model has, of :data:`wnetcli.model_info.OUTPUT_NAMES`: ``"probs"``
        always, ``"boundaries"`` for a model trained with boundaries."""
        names = {o.name for o in self.session.get_outputs()}
        return tuple(name for name in OUTPUT_NAMES if name in names)

    def run(self, batch: np.ndarray, outputs: Sequence[str] = (OUTPUT_NAME,)) -> dict[str, np.ndarray]:
        """The named outputs for a batch of equally sized images.

        Parameters
        ----------
        batch : ndarray, shape (N, H, W, 3), uint8
            RGB images 0..255, all of the same size (any H, W: padded here and cropped).
        outputs : sequence of str
            Of :attr:`outputs`.

        Returns
        -------
        dict of str to ndarray
            ``"probs"``: (N, K, H, W) float32 probabilities summing to 1 over K;
            ``"boundaries"``: (N, 1, H, W) float32 in [0, 1].
        """
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise InputError(f"expected a batch of RGB images (N, H, W, 3), got shape {batch.shape}")
        missing = [name for name in outputs if name not in self.outputs]
        if missing:
            raise ModelError(f"{self.path} has no output {', '.join(missing)} (it has {', '.join(self.outputs)})")
        height, width = batch.shape[1:3]
        nchw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=self._input_dtype)
        padded = np.ascontiguousarray(pad_batch(nchw, self.info.pad_multiple, self.info.min_padded_side))
        results = dict(zip(outputs, self.session.run(list(outputs), {INPUT_NAME: padded}), strict=True))
        channels = {OUTPUT_NAME: self.info.k, BOUNDARIES_NAME: 1}
        for name, values in results.items():
            if values.ndim != 4 or values.shape[1] != channels[name]:
                raise ModelError(
                    f"{self.path}: output {name!r} has shape {values.shape}, expected {channels[name]} channel(s)"
                )
        return {
            name: np.ascontiguousarray(values[:, :, :height, :width], dtype=np.float32)
            for name, values in results.items()
        }
