"""The shared onnxruntime session settings (:mod:`wnetcli.ort_options`); no torch needed."""

from __future__ import annotations

import pytest

ort = pytest.importorskip("onnxruntime")

from wnetcli.errors import InputError  # noqa: E402
from wnetcli.ort_options import OrtSettings, onnx_session_options  # noqa: E402


def test_defaults_are_the_measured_best():
    options = onnx_session_options(2)
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_zero_threads_leaves_onnxruntime_default():
    assert onnx_session_options(0).intra_op_num_threads == ort.SessionOptions().intra_op_num_threads


@pytest.mark.parametrize(("settings", "level"), [
    (OrtSettings(optimization="extended"), "ORT_ENABLE_EXTENDED"),
    (OrtSettings(optimization="basic", spinning=True, sequential=False, threads=3), "ORT_ENABLE_BASIC"),
])
def test_settings_are_applied(settings, level):
    options = onnx_session_options(settings=settings)
    assert options.graph_optimization_level == getattr(ort.GraphOptimizationLevel, level)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if settings.spinning else "0")
    assert (options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL) == settings.sequential
    if settings.threads:
        assert options.intra_op_num_threads == settings.threads


@pytest.mark.parametrize("bad", [{"threads": -1}, {"optimization": "max"}])
def test_bad_settings(bad):
    with pytest.raises(InputError):
        OrtSettings(**bad)
    with pytest.raises(InputError):
        onnx_session_options(-1)
