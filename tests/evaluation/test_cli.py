"""`wnet evaluate` end to end, the scikit-image baselines and the W-Net method branch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bsds_data import BENCH, BSDS, bench_tree
from processes import HELPERS, output_or_fail, processes_with
from typer.testing import CliRunner

from wnetcli.cli import app
from wnetcli.errors import InputError
from wnetcli.evaluation import Baseline, EvaluationOptions, SegmenterMethod, evaluate, find_split
from wnetcli.evaluation.baselines import nest_levels
from wnetcli.ucm import ucm2_to_labels

runner = CliRunner()


@pytest.mark.needs_data
def test_cli_scores_results_and_writes_the_report(tmp_path):
    bsds = bench_tree(tmp_path / "bsds")
    out = tmp_path / "out"
    args = ["evaluate", "--bsds", str(bsds), "--split", "val", "--results", str(BENCH / "ucm2")]
    result = runner.invoke(app, [*args, "--thresholds", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["boundary"]["ods"]) >= {"threshold", "recall", "precision", "f"}
    assert set(metrics["boundary"]["ois"]) >= {"recall", "precision", "f"}
    assert 0 < metrics["boundary"]["ap"] < 1
    assert set(metrics["covering"]) >= {"ods", "ois", "best"}
    assert set(metrics["pri"]) >= {"ods", "ois"}
    assert set(metrics["vi"]) >= {"ods", "ois"}
    assert metrics["images"] == 2
    assert metrics["seconds"] > 0
    for name in ("eval_bdry.csv", "eval_bdry_thr.csv", "eval_bdry_img.csv", "eval_cover_img.csv", "pr_curve.png"):
        assert (out / name).stat().st_size > 0
    assert len((out / "eval_bdry_thr.csv").read_text().splitlines()) == 1 + 5
    assert "boundary F" in result.output
    assert "evaluating ucm2: 2/2" in result.output  # progress as plain lines outside a terminal


@pytest.mark.needs_data
def test_cli_soft_maps_skip_the_region_benchmark(tmp_path):
    bsds = bench_tree(tmp_path / "bsds", count=1)
    out = tmp_path / "out"
    args = ["evaluate", "--bsds", str(bsds), "--split", "val", "--results", str(BENCH / "png")]
    result = runner.invoke(app, [*args, "--thresholds", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["covering"] is None
    assert metrics["boundary"]["ods"]["f"] > 0.5


def test_cli_reports_a_bad_layout_in_one_line(tmp_path):
    result = runner.invoke(app, ["evaluate", "--bsds", str(tmp_path), "--method", "slic"])
    assert result.exit_code == 1
    assert "not a BSDS500 folder" in result.output
    assert "Traceback" not in result.output


@pytest.mark.needs_data
def test_cli_rejects_two_methods_and_unknown_baselines(tmp_path):
    bsds = bench_tree(tmp_path / "bsds", count=1)
    both = runner.invoke(app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--method", "slic", "--results", "x"])
    assert both.exit_code == 1
    assert "not --results and --method" in both.output
    unknown = runner.invoke(app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--method", "kmeans"])
    assert unknown.exit_code == 1
    assert unknown.output == "error: unknown method 'kmeans'; choose one of felzenszwalb, slic, quickshift, watershed\n"
    mixed = runner.invoke(app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--method", "slic", "--fast"])
    assert mixed.exit_code == 1 and "not --method and --fast" in mixed.output


def test_cli_an_output_folder_that_cannot_hold_the_report_fails_before_the_work(tmp_path, monkeypatch):
    from wnetcli.evaluation import api

    bsds = bench_tree(tmp_path / "bsds", count=1)
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(api, "evaluate_image", lambda *a, **k: pytest.fail("the work ran"))
    result = runner.invoke(
        app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--method", "slic", "--out", str(tmp_path / "afile")]
    )
    assert result.exit_code == 1
    assert result.output == f"error: output folder {tmp_path / 'afile'} is a file, not a folder\n"


def test_evaluate_does_not_import_torch():
    code = (
        "import sys; import wnetcli.cli; import wnetcli.evaluation; import wnetcli.ucm; "
        "import wnetcli.evaluation.baselines; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- baselines -------------------------------------------------------------------------------


def test_nest_levels_makes_each_level_a_coarsening():
    rng = np.random.default_rng(1)
    fine = rng.integers(0, 20, size=(16, 16))
    coarse = rng.integers(0, 4, size=(16, 16))
    nested = nest_levels([fine, coarse])
    pairs = np.unique(np.stack([nested[0].ravel(), nested[1].ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # every fine region has exactly one parent


@pytest.mark.needs_data
@pytest.mark.parametrize("name", ["felzenszwalb", "slic", "watershed"])
def test_baselines_on_two_val_images(name, tmp_path):
    if not BSDS.is_dir():
        pytest.skip(f"BSDS500 not found at {BSDS}")
    images = find_split(BSDS, "val")[:2]
    result = evaluate(images, Baseline(name), EvaluationOptions(thresholds=9, save_dir=tmp_path))
    assert result.kind == "ucm2"
    ucm2 = np.load(tmp_path / f"{images[0].id}.npy")
    counts = [int(ucm2_to_labels(ucm2, t).max()) for t in (0.05, 0.5, 0.95)]
    assert counts[0] > counts[1] > counts[2] >= 1
    assert 0.3 < result.boundary.ods_f < 0.9
    assert 0.2 < result.regions.covering_ods <= result.regions.covering_ois <= result.regions.covering_best <= 1
    assert 0.5 < result.regions.pri_ods < 1
    assert result.regions.vi_ois <= result.regions.vi_ods


@pytest.mark.slow
@pytest.mark.needs_data
def test_quickshift_baseline_on_one_val_image():
    if not BSDS.is_dir():
        pytest.skip(f"BSDS500 not found at {BSDS}")
    result = evaluate(find_split(BSDS, "val")[:1], Baseline("quickshift"), EvaluationOptions(thresholds=9))
    assert 0.2 < result.boundary.ods_f < 0.9


# --- the W-Net pipeline as a method ----------------------------------------------------------


@pytest.mark.needs_data
def test_segmenter_method_scores_an_onnx_model(tmp_path):
    onnx_models = pytest.importorskip("onnx_models", reason="tests/onnx_models.py builds the test model")
    onnx_models.require_onnx()
    try:
        import wnetcli.segmentation  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"wnetcli.segmentation is not importable: {exc}")
    from wnetcli.segmentation import SegmentOptions

    model = onnx_models.build_prototype_model(tmp_path / "proto.onnx")
    bsds = bench_tree(tmp_path / "bsds", count=1)
    method = SegmenterMethod(model, SegmentOptions(device="cpu"))
    result = evaluate(find_split(bsds, "val"), method, EvaluationOptions(thresholds=3))
    assert result.kind == "ucm2"
    assert 0 <= result.boundary.ods_f <= 1
    assert 0 < result.regions.covering_ods <= 1


@pytest.mark.needs_data
def test_the_default_evaluation_is_the_default_recipe_and_records_it(tmp_path):
    bsds = bench_tree(tmp_path / "bsds", count=2)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--thresholds", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and 0 < metrics["covering"]["ods"] <= 1
    from wnetcli.segmentation.recipe import RECIPES, recipe_from_dict

    # The resolved recipe is in metrics.json: it rebuilds the recipe that made the results.
    assert metrics["method"] == "default" and metrics["settings"]["model"] is None
    assert recipe_from_dict(metrics["settings"]["recipe"]) == RECIPES["default"]
    classical = runner.invoke(app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--method", "classical"])
    assert classical.exit_code == 1 and "--method classical is now the default" in classical.output


def test_recipe_and_fast_choose_the_pipeline_and_name_the_run(tmp_path):
    from wnetcli.cli.evaluate import _build_method

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # only named here; the segmenter checks it on first use
    network = _build_method(None, None, model, "network", False, "cpu", 1)
    assert network.options.recipe.name == "network" and network.options.recipe.network.mirror
    assert network.name == "network-m"
    fast = _build_method(None, None, None, None, True, "cpu", 1)
    assert fast.name == "fast" and fast.options.recipe.grid.downsample == 2
    assert _build_method(None, None, None, None, False, "cpu", 2).options.threads == max(1, (os.cpu_count() or 1) // 2)
    with pytest.raises(InputError, match="--fast is short for --recipe fast"):
        _build_method(None, None, None, "network", True, "cpu", 1)
    (tmp_path / "mine.toml").write_text("[grid]\ndownsample = 3\n")
    mine = _build_method(None, None, None, str(tmp_path / "mine.toml"), False, "cpu", 1)
    assert mine.name == "mine" and mine.options.recipe.grid.downsample == 3


@pytest.mark.needs_data
def test_a_model_given_to_a_recipe_that_does_not_read_it_is_said_to_be_unused(tmp_path):
    onnx_models = pytest.importorskip("onnx_models", reason="tests/onnx_models.py builds the test model")
    onnx_models.require_onnx()
    model = onnx_models.build_prototype_model(tmp_path / "proto.onnx")
    bsds = bench_tree(tmp_path / "bsds", count=1)
    result = runner.invoke(app, ["evaluate", "--bsds", str(bsds), "--split", "val", "--thresholds", "3",
                                 "--model", str(model), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "was checked but not run: recipe 'default' reads none of the network's output" in " ".join(
        result.output.split()
    )


@pytest.mark.needs_data
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc (Linux)")
def test_a_killed_evaluation_leaves_no_worker_behind(tmp_path):
    bsds = bench_tree(tmp_path / "bsds", count=5)
    marker = str(tmp_path / "out")  # on the command line of the run and of its forked workers
    code = "import sys; from wnetcli.cli import main; main(sys.argv[1:])"
    args = ["evaluate", "--bsds", str(bsds), "--split", "val", "--jobs", "2"]
    run = subprocess.Popen([sys.executable, "-c", code, *args, "--out", marker])

    def others() -> list[int]:
        return processes_with(marker, exclude=(run.pid,))

    deadline = time.monotonic() + 60
    while len(others()) < 2 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    if run.poll() is not None:
        pytest.fail("the evaluation ended before its workers were seen; the test proves nothing")
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    deadline = time.monotonic() + 15
    while (left := others()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"workers of the killed evaluation are still alive: {left}"


@pytest.mark.needs_data
@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="workers forked from the run"
)
def test_a_stop_signal_that_reaches_a_worker_before_its_initializer_does_not_break_the_pool(tmp_path, monkeypatch):
    """A Ctrl-C to the whole group while the pool starts: a worker gets it before its
    initializer ignores Ctrl-C (simulated by raising it at the initializer's start). With this
    process's handler inherited, it raised there and the pool broke (BrokenProcessPool)."""
    from wnetcli.evaluation import ResultsDir, api

    initialize = api._init_worker

    def stopped_then_initialized(run_pid: int) -> None:
        signal.raise_signal(signal.SIGINT)
        initialize(run_pid)

    monkeypatch.setattr(api, "_init_worker", stopped_then_initialized)
    images = find_split(bench_tree(tmp_path / "bsds", count=2), "val")
    result = evaluate(images, ResultsDir(BENCH / "ucm2"), EvaluationOptions(thresholds=3, jobs=2))
    assert len(result.images) == 2


@pytest.mark.needs_data
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="signals the run's main thread (POSIX)")
def test_a_second_stop_signal_in_the_unwinding_of_a_lock_wait_still_exits_130(tmp_path):
    """The second of two stop signals lands in the ``finally`` of the lock wait that the first
    broke off, every time (tests/processes.py). Its KeyboardInterrupt there left the lock
    released, and the command ended with "internal error: RuntimeError: release unlocked lock"
    and exit 2; a second signal must do nothing once the run is stopping."""
    bsds = bench_tree(tmp_path / "bsds", count=5)
    marker = str(tmp_path / "out")
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from processes import stop_twice_in_a_lock_wait; "
        "stop_twice_in_a_lock_wait('as_completed'); from wnetcli.cli import main; main(sys.argv[1:])"
    )
    args = ["evaluate", "--bsds", str(bsds), "--split", "val", "--jobs", "2"]
    run = subprocess.Popen(
        [sys.executable, "-c", code, HELPERS, *args, "--out", marker], start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = output_or_fail(run, 120, "the interrupted evaluation did not exit")
    assert run.returncode == 130 and "interrupted: no report written" in output, output
    assert "internal error" not in output and not (tmp_path / "out" / "metrics.json").exists()
    if Path("/proc").is_dir():
        deadline = time.monotonic() + 15
        while (left := processes_with(marker)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"workers of the interrupted evaluation are still alive: {left}"


@pytest.mark.needs_data
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc (Linux)")
def test_ctrl_c_twice_stops_an_evaluation_at_once_and_leaves_no_worker(tmp_path):
    """SIGINT to the run and then to its whole group, as ``timeout -s INT`` sends it (or a user
    pressing Ctrl-C twice); before the shutdown deferred the second one, 3 runs in 6 hung."""
    bsds = bench_tree(tmp_path / "bsds", count=5)
    marker = str(tmp_path / "out")
    code = "import sys; from wnetcli.cli import main; main(sys.argv[1:])"
    args = ["evaluate", "--bsds", str(bsds), "--split", "val", "--jobs", "2"]
    run = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--out", marker], start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    while len(processes_with(marker, exclude=(run.pid,))) < 2 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    if run.poll() is not None:
        pytest.fail("the evaluation ended before its workers were seen; the test proves nothing")
    run.send_signal(signal.SIGINT)
    os.killpg(run.pid, signal.SIGINT)
    output = output_or_fail(run, 60, "the interrupted evaluation did not exit")
    assert run.returncode == 130 and "interrupted: no report written" in output, output
    assert not (tmp_path / "out" / "metrics.json").exists()
    deadline = time.monotonic() + 15
    while (left := processes_with(marker, exclude=(run.pid,))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"workers of the interrupted evaluation are still alive: {left}"
