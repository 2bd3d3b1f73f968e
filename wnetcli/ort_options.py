"""onnxruntime session settings for the exported W-Net encoder (no torch, no onnx import).

Shared by ``wnet segment`` (:mod:`wnetcli.segmentation.runtime`), the export's own
verification and ``benchmarks/bench_inference.py``, so that all three measure and run the
same configuration.

The defaults were chosen with ``benchmarks/bench_inference.py --variants`` (figures in
docs/experiments.md): all graph optimisations (``ORT_ENABLE_EXTENDED`` lacks the NCHWc blocked
layout and some conv fusions, and ran much slower), intra-op spinning off (onnxruntime's
default is on; on a shared 2-core machine a spinning thread takes the core its sibling needs),
and no IO binding (``run_with_iobinding`` gained nothing: the input copy is negligible).
"""

from __future__ import annotations

from dataclasses import dataclass

from wnetcli.errors import DependencyError, InputError

#: onnxruntime's logger severities: 0 verbose ... 3 error. Errors only: the CUDA provider
#: probe on a CPU-only machine would otherwise print warnings at every start.
QUIET_SEVERITY = 3


@dataclass(frozen=True)
class OrtSettings:
    """The knobs of :func:`onnx_session_options` (defaults = the measured best on CPU).

    Attributes:
        threads: intra-op threads; 0 lets onnxruntime use one per physical core.
        optimization: ``"all"`` (includes the NCHWc blocked-layout transform and its conv
            fusions), ``"extended"`` or ``"basic"``.
        spinning: whether idle intra-op threads busy-wait for work. Spinning wins a little
            on an idle machine and loses badly on a shared one.
        sequential: run nodes one at a time (the encoder is a chain; parallel execution only
            adds scheduling cost).
    """

    threads: int = 0
    optimization: str = "all"
    spinning: bool = False
    sequential: bool = True

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise InputError(f"threads must be 0 (one per core) or positive, got {self.threads}")
        if self.optimization not in ("all", "extended", "basic"):
            raise InputError(f"optimization must be all, extended or basic, got {self.optimization!r}")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a base dependency
        raise DependencyError(f"onnxruntime is not installed ({exc}); pip install onnxruntime-gpu") from exc
    return onnxruntime


def onnx_session_options(threads: int = 0, settings: OrtSettings | None = None):
    """Return an ``onnxruntime.SessionOptions`` for running the W-Net encoder.

    Parameters
    ----------
    threads : int
        Intra-op threads (0: onnxruntime's default, one per physical core). Overrides
        ``settings.threads`` when non-zero.
    settings : OrtSettings, optional
        The full set of knobs; the defaults are the fastest measured on CPU.

    Returns
    -------
    onnxruntime.SessionOptions
    """
    ort = _import_onnxruntime()
    settings = settings or OrtSettings()
    if threads < 0:
        raise InputError(f"threads must be 0 (one per core) or positive, got {threads}")
    options = ort.SessionOptions()
    options.log_severity_level = QUIET_SEVERITY
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[settings.optimization]
    intra = threads or settings.threads
    if intra:
        options.intra_op_num_threads = intra
    # One inter-op thread: with sequential execution a second pool would only sit idle.
    options.inter_op_num_threads = 1
    options.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL if settings.sequential else ort.ExecutionMode.ORT_PARALLEL
    )
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spinning else "0")
    return options
