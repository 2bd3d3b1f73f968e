"""The folder runner and ``wnet segment``: outputs, resume/overwrite, failures, shards, atomic writes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bsds_data import BSDS
from onnx_models import build_prototype_model, squares_image
from PIL import Image
from processes import HELPERS, output_or_fail, processes_with
from typer.testing import CliRunner

from wnetcli.cli import app
from wnetcli.errors import InputError
from wnetcli.segmentation import (
    BatchOptions,
    SegmentationResult,
    Segmenter,
    SegmentOptions,
    plan_batch,
    segment_folder,
)
from wnetcli.segmentation.batch import in_shard, parse_shard
from wnetcli.segmentation.outputs import (
    colorize,
    labels_to_png_array,
    output_paths,
    read_ucm,
    ucm_to_uint16,
    write_outputs,
)

runner = CliRunner()
CPU = SegmentOptions(device="cpu", threads=1)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_prototype_model(tmp_path_factory.mktemp("model") / "proto.onnx")


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    """A small tree: odd sizes, grey, RGBA, a subfolder, one corrupt file."""
    root = tmp_path / "in"
    _save(root / "a.png", squares_image(33))
    _save(root / "grey.png", squares_image(20)[..., 0])
    rgba = np.dstack([squares_image(18), np.full((18, 18), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    _save(root / "sub" / "b.bmp", squares_image(40)[:37, :29])
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    return root


def last_run(out: Path) -> dict:
    """The last entry of the output folder's runs.jsonl (the settings of the latest run)."""
    return json.loads((out / "runs.jsonl").read_text().splitlines()[-1])


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_outputs_statuses_and_summary(tmp_path, images, model_path):
    out = tmp_path / "out"
    options = BatchOptions(out_dir=out, recursive=True, save=("overlay", "color", "ucm", "probs"))
    report = segment_folder([images], model_path, options, CPU)
    assert [r.image for r in report.failed] == ["broken.jpg"]
    assert "broken.jpg" in report.failed[0].message
    rows = _rows(out / "summary.csv")
    assert set(rows) == {"a.png", "grey.png", "rgba.png", "sub/b.bmp", "broken.jpg"}
    assert rows["sub/b.bmp"]["width"] == "29" and rows["sub/b.bmp"]["height"] == "37"
    assert rows["a.png"]["status"] == "ok" and rows["a.png"]["regions"] == "4"
    assert rows["broken.jpg"]["status"] == "failed" and rows["broken.jpg"]["message"]

    labels = np.asarray(Image.open(out / "sub" / "b.png"))
    assert labels.shape == (37, 29) and labels.dtype == np.uint8 and labels.min() == 1
    assert np.asarray(Image.open(out / "sub" / "b.overlay.png")).shape == (37, 29, 3)
    assert np.asarray(Image.open(out / "sub" / "b.color.png")).shape == (37, 29, 3)
    ucm = read_ucm(out / "sub" / "b.ucm.png")
    assert ucm.shape == (75, 59) and ucm.dtype == np.float32 and ucm.min() >= 0 and ucm.max() <= 1
    assert np.load(out / "sub" / "b.probs.npy").shape == (4, 37, 29)
    assert last_run(out)["save"] == ["overlay", "color", "ucm", "probs"]
    assert not list(out.rglob("*.tmp*"))


def test_rerun_skips_and_overwrite_redoes(tmp_path, images, model_path):
    out = tmp_path / "out"
    first = segment_folder([images], model_path, BatchOptions(out_dir=out), CPU)
    assert first.count("ok") == 3  # a, grey, rgba (not recursive); broken fails
    stamp = (out / "a.png").stat().st_mtime_ns

    again = segment_folder([images], model_path, BatchOptions(out_dir=out), CPU)
    assert again.count("skipped") == 3 and again.count("ok") == 0 and len(again.failed) == 1
    assert (out / "a.png").stat().st_mtime_ns == stamp

    # Asking for a new output kind redoes only what is missing.
    more = segment_folder([images], model_path, BatchOptions(out_dir=out, save=("ucm",)), CPU)
    assert more.count("ok") == 3 and (out / "a.ucm.png").is_file()
    assert (out / "a.png").stat().st_mtime_ns == stamp

    redo = segment_folder([images], model_path, BatchOptions(out_dir=out, overwrite=True), CPU)
    assert redo.count("ok") == 3 and (out / "a.png").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("workers", [0, 2])
def test_serial_and_overlapped_runs_agree(tmp_path, images, model_path, workers):
    out = tmp_path / f"out{workers}"
    report = segment_folder([images], model_path, BatchOptions(out_dir=out, workers=workers), CPU)
    assert [r.image for r in report.records] == ["a.png", "broken.jpg", "grey.png", "rgba.png"]
    labels = np.asarray(Image.open(out / "a.png"))
    expected = np.zeros((33, 33), np.uint8)
    expected[:16, :16], expected[:16, 16:], expected[16:, :16], expected[16:, 16:] = 1, 2, 3, 4
    assert len(np.unique(labels)) == 4
    # the same partition as the four quadrants, whatever the numbering
    pairs = set(zip(labels.ravel().tolist(), expected.ravel().tolist(), strict=True))
    assert len(pairs) == 4


def test_workers_given_no_soft_maps_when_none_are_read_give_the_same_outputs(tmp_path, images, model_path):

    unread = CPU
    assert not unread.runs_network  # so the workers get no maps (None)
    outputs = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        report = segment_folder([images], model_path, BatchOptions(out_dir=out, workers=workers, save=("ucm",)), unread)
        assert report.count("ok") == 3
        outputs[workers] = [np.asarray(Image.open(out / name)) for name in ("a.png", "a.ucm.png", "grey.png")]
    for serial, overlapped in zip(outputs[0], outputs[2], strict=True):
        np.testing.assert_array_equal(serial, overlapped)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_network_is_not_run_when_nothing_reads_it_and_the_outputs_are_the_same(
    tmp_path, images, model_path, monkeypatch, workers
):
    from dataclasses import replace

    from wnetcli.segmentation.runtime import OnnxModel

    calls = []
    original = OnnxModel.run
    monkeypatch.setattr(
        OnnxModel, "run", lambda self, batch, outputs: calls.append(len(batch)) or original(self, batch, outputs)
    )
    saves = ("ucm",)
    unread = CPU
    read = replace(CPU, soft_maps=True)  # the soft maps are asked for: it runs
    reports, outputs = {}, {}
    for name, options in (("unread", unread), ("read", read)):
        out = tmp_path / name
        batch = BatchOptions(out_dir=out, workers=workers, save=saves)
        reports[name] = segment_folder([images], model_path, batch, options)
        outputs[name] = [np.asarray(Image.open(out / f)) for f in ("a.png", "a.ucm.png", "grey.png", "rgba.png")]
        assert last_run(out)["network_run"] is reports[name].network_run
    assert not reports["unread"].network_run and reports["read"].network_run
    assert sum(calls) == 3  # the three readable images of the folder, in the second run only
    for a, b in zip(outputs["unread"], outputs["read"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(record.timings["inference"] == 0.0 for record in reports["unread"].records if record.status == "ok")


def test_a_network_cue_runs_the_network(model_path):
    from wnetcli.segmentation import RECIPES

    cue = Segmenter(model_path, SegmentOptions(device="cpu", recipe=RECIPES["network"]))
    plain = Segmenter(model_path, SegmentOptions(device="cpu"))
    assert cue.runs_network and not plain.runs_network
    (maps,), (seconds,) = plain.network_maps([squares_image(20)])
    assert maps is None and seconds == 0.0
    # Never run, never loaded: no onnxruntime session, no device probe, no device note.
    assert plain._model is None and plain.device == "cpu" and plain.device_note == ""
    (maps,), _ = cue.network_maps([squares_image(20)])
    assert maps.soft_maps.shape == (4, 20, 20) and maps.boundaries is None
    assert plain.info.k == 4 and plain._model is not None  # the library can still ask for it


def test_a_missing_model_fails_even_where_the_network_would_not_run(tmp_path):
    from wnetcli.errors import ModelError

    with pytest.raises(ModelError, match="model not found"):
        Segmenter(tmp_path / "missing.onnx", SegmentOptions(device="cpu"))


def test_a_folder_run_without_the_network_never_imports_onnxruntime(tmp_path, images, model_path):
    # In a fresh interpreter: this one has imported onnxruntime for other tests.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from wnetcli.segmentation import BatchOptions, SegmentOptions, segment_folder\n"
        "options = SegmentOptions(device='auto')\n"
        f"report = segment_folder([Path({str(images)!r})], None, "
        f"BatchOptions(out_dir=Path({str(tmp_path / 'out')!r}), workers=0), options)\n"
        "print(report.network_run, report.device_note == '', 'onnxruntime' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "False"]
    config = last_run(tmp_path / "out")
    assert config["network_run"] is False and config["model_info"] is None


@pytest.mark.parametrize("streams", [1, 3])
def test_several_inference_calls_at_once_give_the_same_outputs_in_order(tmp_path, images, model_path, streams):
    from dataclasses import replace

    outputs = {}
    for workers, options in ((0, CPU), (2, replace(CPU, streams=streams))):
        out = tmp_path / f"out{workers}"
        report = segment_folder(
            [images], model_path, BatchOptions(out_dir=out, workers=workers, recursive=True, save=("ucm", "probs")),
            options,
        )
        assert [r.image for r in report.records] == ["a.png", "broken.jpg", "grey.png", "rgba.png", "sub/b.bmp"]
        outputs[workers] = [
            np.asarray(Image.open(out / name)) for name in ("a.png", "a.ucm.png", "grey.png", "rgba.png", "sub/b.png")
        ] + [np.load(out / "a.probs.npy")]
    for serial, concurrent in zip(outputs[0], outputs[2], strict=True):
        np.testing.assert_array_equal(serial, concurrent)


def test_folder_options_share_the_cores_among_inference_calls_on_the_cpu(monkeypatch):
    import wnetcli.segmentation.runtime as runtime
    from wnetcli.segmentation.pipeline import AUTO_STREAMS, folder_options

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    cpu = folder_options(SegmentOptions(device="cpu"))
    assert (cpu.streams, cpu.threads) == (AUTO_STREAMS, 8 // AUTO_STREAMS)
    assert folder_options(SegmentOptions(device="cpu", threads=3)).threads == 3  # given: kept
    assert folder_options(SegmentOptions(device="cpu", streams=4)).threads == 2
    given = SegmentOptions(device="cpu", streams=1, threads=8)
    assert folder_options(given) == given
    cuda = folder_options(SegmentOptions(device="cuda"))
    assert (cuda.streams, cuda.threads) == (1, None)  # one call at a time on a GPU
    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: False)
    assert folder_options(SegmentOptions(device="auto")).streams == AUTO_STREAMS
    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: True)
    assert folder_options(SegmentOptions(device="auto")).streams == 1
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    single = folder_options(SegmentOptions(device="cpu"))
    assert (single.streams, single.threads) == (1, 1)
    with pytest.raises(InputError, match="streams"):
        SegmentOptions(streams=0)


def test_batches_group_images_of_equal_size(tmp_path, model_path, monkeypatch):
    for i in range(7):  # alternating landscape / portrait, as in BSDS
        height, width = (16, 24) if i % 2 else (24, 16)
        _save(tmp_path / "in" / f"img{i}.png", squares_image(24)[:height, :width])
    calls = []
    original = Segmenter.predict

    def spy(self, images):
        calls.append((len(images), sorted({image.shape[:2] for image in images})))
        return original(self, images)

    monkeypatch.setattr(Segmenter, "predict", spy)
    options = SegmentOptions(device="cpu", batch_size=3, soft_maps=True)  # the soft maps make the network run
    report = segment_folder([tmp_path / "in"], model_path, BatchOptions(out_dir=tmp_path / "out"), options)
    assert report.count("ok") == 7
    # every call holds one size only: two full batches of 3 and the last image alone
    assert sorted(calls) == [(1, [(24, 16)]), (3, [(16, 24)]), (3, [(24, 16)])]


def test_empty_folder_and_missing_input_are_input_errors(tmp_path, model_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        plan_batch([tmp_path / "empty"], BatchOptions(out_dir=tmp_path / "out"))
    with pytest.raises(InputError, match="not found"):
        plan_batch([tmp_path / "missing"], BatchOptions(out_dir=tmp_path / "out"))


def test_clashing_output_names_fail_the_second_input(tmp_path, model_path):
    _save(tmp_path / "in" / "x.png", squares_image(16))
    _save(tmp_path / "in" / "x.jpg", squares_image(16))
    plan = plan_batch([tmp_path / "in"], BatchOptions(out_dir=tmp_path / "out"))
    assert len(plan.jobs) == 1 and len(plan.decided) == 1
    assert plan.decided[0].status == "failed" and "rename" in plan.decided[0].message


def test_the_summary_tells_apart_two_inputs_of_the_same_name_by_their_source(tmp_path, model_path):
    first = _save(tmp_path / "a" / "x.png", squares_image(16))
    second = _save(tmp_path / "b" / "x.png", squares_image(16))
    options = BatchOptions(out_dir=tmp_path / "out")
    segment_folder([tmp_path / "a", tmp_path / "b"], model_path, options, CPU)
    with open(options.summary_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources = sorted((row["source"], row["status"]) for row in rows)
    assert sources == [(str(first.resolve()), "ok"), (str(second.resolve()), "failed")]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_every_file_exactly_once(tmp_path, count):
    for i in range(23):
        (tmp_path / "in" / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"d{i % 3}" / f"img{i}.png").write_bytes(b"x")
    everything = plan_batch([tmp_path / "in"], BatchOptions(out_dir=tmp_path / "o", recursive=True))
    all_names = sorted(job.relative.as_posix() for job in everything.jobs)
    seen: list[str] = []
    for index in range(count):
        options = BatchOptions(out_dir=tmp_path / "o", recursive=True, shard=(index, count))
        seen += [job.relative.as_posix() for job in plan_batch([tmp_path / "in"], options).jobs]
    assert len(all_names) == 23 and sorted(seen) == all_names


def test_shard_parsing_and_stability():
    assert parse_shard("2/5") == (2, 5)
    for bad in ["5/5", "-1/3", "1", "a/b", "1/0"]:
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)
    # CRC-32 is fixed by its definition, so the split is the same on every machine.
    assert [in_shard(Path("a/b.jpg"), (i, 4)) for i in range(4)].count(True) == 1
    assert in_shard(Path("img.png"), None)


def test_shard_summaries_do_not_collide(tmp_path, images, model_path):
    names = set()
    for index in range(2):
        options = BatchOptions(out_dir=tmp_path / "out", shard=(index, 2))
        report = segment_folder([images], model_path, options, CPU)
        names.add(report.summary_path.name)
    assert names == {"summary.shard-0-of-2.csv", "summary.shard-1-of-2.csv"}


def test_output_names_and_encodings(tmp_path):
    paths = output_paths(tmp_path, Path("sub/img.jpeg"), ("ucm", "probs"), ucm_format="npy")
    assert paths == {
        "labels": tmp_path / "sub" / "img.png",
        "ucm": tmp_path / "sub" / "img.ucm.npy",
        "probs": tmp_path / "sub" / "img.probs.npy",
    }
    with pytest.raises(InputError, match="--save"):
        output_paths(tmp_path, Path("a.png"), ("contours",))
    assert labels_to_png_array(np.array([[1, 255]])).dtype == np.uint8
    assert labels_to_png_array(np.array([[1, 256]])).dtype == np.uint16
    ucm = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(ucm_to_uint16(ucm) / 65535.0, ucm, atol=1e-5)
    colours = colorize(np.array([[1, 2], [2, 1]]))
    assert colours.shape == (2, 2, 3) and (colours[0, 0] == colours[1, 1]).all()


@pytest.mark.parametrize("regions,dtype", [(255, np.uint8), (300, np.uint16)])
def test_label_maps_are_written_as_8_or_16_bit(tmp_path, regions, dtype):
    labels = (np.arange(20 * 30).reshape(20, 30) % regions + 1).astype(np.int32)
    result = SegmentationResult(labels, np.zeros((41, 61), np.float32), np.zeros((2, 20, 30), np.float32))
    paths = output_paths(tmp_path, Path("x.jpg"), ("ucm",))
    write_outputs(paths, np.zeros((20, 30, 3), np.uint8), result)
    written = np.asarray(Image.open(paths["labels"]))
    assert written.dtype == dtype
    np.testing.assert_array_equal(written, labels)


def test_ucm_npy_round_trip(tmp_path, images, model_path):
    options = BatchOptions(out_dir=tmp_path / "out", save=("ucm",), ucm_format="npy")
    segment_folder([images / "a.png"], model_path, options, CPU)
    ucm = read_ucm(tmp_path / "out" / "a.ucm.npy")
    assert ucm.shape == (67, 67) and ucm.dtype == np.float32
    (tmp_path / "out" / "a.ucm.npy").rename(tmp_path / "out" / "A.UCM.NPY")  # the suffix in capitals
    assert read_ucm(tmp_path / "out" / "A.UCM.NPY").shape == (67, 67)


def test_read_ucm_refuses_what_is_no_ucm(tmp_path, images):
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "even.npy", np.zeros((4, 6), np.float32))
    cases = [
        (tmp_path / "missing.png", "cannot read the ucm"),
        (tmp_path / "pickled.npy", "cannot read the ucm"),
        (tmp_path / "even.npy", r"is not a ucm2: shape \(4, 6\)"),
        (images / "a.png", "is not a ucm \\(a 16-bit PNG\\), but a RGB image"),  # a photo or label map
        (images / "broken.jpg", "cannot read the ucm"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message):
            read_ucm(path)


# --- the command line ---


def test_cli_segments_and_exit_code_reflects_failures(tmp_path, images, model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["segment", str(images), "--out", "out", "--model", str(model_path), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--save", "overlay,ucm", "--save", "color"])
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "failed" in result.output
    assert (tmp_path / "out" / "a.overlay.png").is_file() and (tmp_path / "out" / "a.color.png").is_file()
    # Not a terminal: a plain progress line per image (per 5% of a larger folder), no bar.
    assert "segmenting: 1/4" in result.output and "segmenting: 4/4" in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("segmenting ")]  # no bar
    (images / "broken.jpg").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output


def test_cli_the_network_recipe_runs_the_model_and_the_resolved_recipe_is_recorded(
    tmp_path, images, model_path, monkeypatch
):
    (images / "broken.jpg").unlink()
    monkeypatch.chdir(tmp_path)
    args = ["segment", str(images), "--out", "out", "--model", str(model_path), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--recipe", "network"])
    assert result.exit_code == 0, result.output
    config = last_run(tmp_path / "out")
    assert config["network_run"] is True and config["recipe"]["network"]["mirror"] is True
    assert config["recipe"]["name"] == "network" and config["recipe"]["cues"]["network_edges"]["boundary"] == 0.2
    assert config["model_info"]["k"] == 4
    # A recipe file: the default with the network's edges kept out of the watershed.
    (tmp_path / "mine.toml").write_text('[cues.network_edges]\nboundary = 0.3\nflood = false\n')
    result = runner.invoke(app, [*args, "--overwrite", "--recipe", "mine.toml"])
    assert result.exit_code == 0, result.output
    config = last_run(tmp_path / "out")
    assert config["recipe"]["name"] == "mine" and config["recipe"]["cues"]["network_edges"]["flood"] is False
    assert config["network_run"] is True and config["recipe"]["network"]["mirror"] is False
    result = runner.invoke(app, [*args, "--recipe", "nowhere.toml"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "unknown recipe 'nowhere.toml'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "nope.onnx"], "model not found"),
        (["--shard", "3/2"], "--shard"),
        (["--save", "everything"], "--save"),
        (["--regions", "3", "--level", "0.5"], "not both"),
        # A misspelt device is refused even by settings that never run the network.
        (["--device", "gpu"], "device must be one of auto, cpu, cuda, got 'gpu'"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, images, model_path, extra, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["segment", str(images), "--out", "out", "--device", "cpu"]
    if "--model" not in extra:
        args += ["--model", str(model_path)]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    # Exactly one line: no empty line either (a progress bar outside a terminal left one).
    assert result.output.count("\n") == 1 and result.output.endswith("\n"), repr(result.output)


def test_cli_device_cuda_without_cuda_is_one_line(tmp_path, images, model_path, monkeypatch):
    import wnetcli.segmentation.runtime as runtime

    monkeypatch.setattr(runtime, "cuda_driver_present", lambda: False)  # as on a machine without a GPU
    monkeypatch.chdir(tmp_path)
    args = ["segment", str(images), "--out", "out", "--model", str(model_path), "--device", "cuda"]
    result = runner.invoke(app, [*args, "--recipe", "network"])  # a recipe that runs the network
    assert result.exit_code == 1 and "--device cuda" in result.output
    assert len(result.output.strip().splitlines()) == 1
    # Settings that never run the network never touch the device either.
    result = runner.invoke(app, [*args, "--out", "out-plain"])
    assert "was checked but not run" in result.output and "--device cuda" not in result.output
    assert (tmp_path / "out-plain" / "a.png").is_file()


def test_cli_missing_input_and_missing_default_model(tmp_path, model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["segment", "nowhere", "--out", "out", "--model", str(model_path)])
    assert result.exit_code == 1 and "input not found: nowhere" in result.output
    assert result.output.count("\n") == 1, repr(result.output)
    from wnetcli.segmentation import recipe

    monkeypatch.setattr(recipe, "MODELS_FOLDER", tmp_path)  # a broken installation
    _save(tmp_path / "one.png", squares_image(8))
    result = runner.invoke(app, ["segment", "one.png", "--out", "out"])
    assert result.exit_code == 1 and "--model FILE.onnx" in result.output


def test_segment_never_imports_torch(tmp_path, model_path):
    _save(tmp_path / "in" / "a.png", squares_image(16))
    code = (
        "import sys; "
        "from wnetcli.cli import main\n"
        "try: main(['segment', 'in', '--out', 'out', '--model', sys.argv[1]])\n"
        "except SystemExit as e: assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a.png").is_file()


@pytest.mark.parametrize("watch", ["pidfd", "poll"])
def test_a_worker_exits_when_the_run_that_started_it_ends(watch):
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = (
        "import os, sys, time\n"
        + ("del os.pidfd_open\n" if watch == "poll" and hasattr(os, "pidfd_open") else "")
        + "from wnetcli.workers import exit_with\n"
        "exit_with(int(sys.argv[1]), poll_seconds=0.1)\n"
        "print('watching', flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code, str(run.pid)], stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "watching"
    assert worker.poll() is None  # the run is alive: the worker stays
    run.kill()
    run.wait()
    assert worker.wait(timeout=10) == 1
    # A run already gone when the worker starts: it does not wait at all.
    late = subprocess.run([sys.executable, "-c", code, str(run.pid)], capture_output=True, timeout=20)
    assert late.returncode == 1


def test_kill_9_leaves_no_partial_output_and_a_rerun_completes(tmp_path, model_path):
    """Kill a run with SIGKILL while it writes; every final-named file must be complete."""
    _forty_images(tmp_path / "in")
    code = (
        "import sys; "
        "from wnetcli.cli import main; "
        "main(['segment', 'in', '--out', 'out', '--device', 'cpu', '--save', 'overlay,color,ucm,probs', "
        "'--model', sys.argv[1]])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(model_path)], cwd=tmp_path)
    out = tmp_path / "out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # The worker processes and their fork server end with the run (wnetcli.workers.exit_with);
    # once they have, nothing writes any more.
    if Path("/proc").is_dir():  # Linux: no process of the run is left behind, not even idle
        deadline = time.monotonic() + 15
        while (left := processes_with(str(tmp_path), "forkserver")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the killed run are still alive: {left}"
    else:  # no way to see them: wait until nothing changes
        listing, deadline = None, time.monotonic() + 20
        while time.monotonic() < deadline and listing != (listing := sorted(p.name for p in out.iterdir())):
            time.sleep(0.5)
    finals = [p for p in out.glob("*") if ".tmp." not in p.name and p.suffix in {".png", ".npy"}]
    assert finals, "the run was killed before writing anything; the test proves nothing"
    for path in finals:
        if path.suffix == ".png":
            with Image.open(path) as image:
                image.load()  # raises on a truncated PNG
        else:
            np.load(path)
    done_before = {p.name for p in out.glob("img??.png")}
    assert len(done_before) < 40, "the run finished before the kill; the test proves nothing"

    # The same outputs as the killed run (its command line above).
    saved = ("overlay", "color", "ucm", "probs")
    report = segment_folder([tmp_path / "in"], model_path, BatchOptions(out_dir=out, save=saved), CPU)
    # the label map is written last, so every image that has one is complete and skipped
    assert report.count("skipped") == len(done_before) and not report.failed
    assert len(list(out.glob("img??.png"))) == 40
    # What the kill left half-written belonged to images the rerun redid: their temporaries are gone.
    assert not [p.name for p in out.glob(".img*.tmp.*")]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_worker_leaves_stop_signals_to_its_run_and_still_ends_with_it(stop):
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = (
        "import sys, time\n"
        "from wnetcli.workers import serve_run\n"
        "serve_run(int(sys.argv[1]))\n"
        "print('serving', flush=True)\n"
        "for line in sys.stdin:\n"
        "    print(line.strip(), flush=True)\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code, str(run.pid)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout.readline().strip() == "serving"
    worker.send_signal(stop)  # a terminal's Ctrl-C, SLURM's SIGTERM: sent to the whole group
    # Pending before the worker reads these lines, the signal is delivered before it answers the
    # first; its Python handler, if any, runs before the loop reads the second.
    for line in ("one", "two"):
        worker.stdin.write(f"{line}\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == line, "a worker must leave stop signals to its run"
    run.kill()
    run.wait()
    assert worker.wait(timeout=10) == 1


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_deferred_interrupts_hold_a_stop_signal_back_until_the_block_ends(stop):
    from wnetcli.workers import deferred_interrupts

    before = signal.getsignal(stop)
    finished = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        signal.raise_signal(stop)  # handled before it returns: only noted
        finished.append(True)
    assert finished == [True] and signal.getsignal(stop) is before
    with deferred_interrupts():  # no signal: nothing raised
        pass
    assert signal.getsignal(stop) is before


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGINT, signal.SIGINT), (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
    ids=["ctrl-c-twice", "ctrl-c-then-sigterm", "sigterm-then-ctrl-c"],
)
def test_under_interrupt_once_only_the_first_stop_signal_interrupts(first, second):
    from wnetcli.workers import STOP_SIGNALS, deferred_interrupts, interrupt_once

    before = {stop: signal.getsignal(stop) for stop in STOP_SIGNALS}
    with interrupt_once():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(first)
        signal.raise_signal(second)  # the run is stopping already: nothing
        with deferred_interrupts():  # a pool's shutdown during that stop: held back, then nothing
            signal.raise_signal(second)
    assert {stop: signal.getsignal(stop) for stop in STOP_SIGNALS} == before
    # A signal held back during a shutdown is the first one: raised after it, and the next is not.
    finished = []
    with interrupt_once():
        with pytest.raises(KeyboardInterrupt), deferred_interrupts():
            signal.raise_signal(first)
            finished.append(True)
        signal.raise_signal(second)
    assert finished == [True]
    assert {stop: signal.getsignal(stop) for stop in STOP_SIGNALS} == before


def _forty_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(40):
        # four flat quadrants in random colours: cheap to post-process, unlike noise
        colours = rng.integers(0, 256, (4, 3)).astype(np.uint8)
        _save(root / f"img{i:02d}.png", squares_image(64, colours))


@pytest.mark.parametrize(
    ("stop", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "sigterm-to-the-job", "kill"],
)
def test_ctrl_c_or_sigterm_stops_a_folder_run_at_once_keeps_its_summary_and_a_rerun_finishes(
    tmp_path, model_path, stop, whole_group
):
    """SIGINT to the whole process group, as a terminal sends it (4 of 12 interrupted runs hung
    for good before the workers left Ctrl-C to the run, wnetcli.workers); SIGTERM to every
    process, as SLURM sends it at a time limit, or to the run alone, as ``kill`` does (the run
    then ended without its summary)."""
    _forty_images(tmp_path / "in")
    code = (
        "import sys; "
        "from wnetcli.cli import main; "
        "main(['segment', 'in', '--out', 'out', '--device', 'cpu', '--save', 'ucm', '--model', sys.argv[1]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(model_path)], cwd=tmp_path, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    out = tmp_path / "out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob("img??.png"))) < 3:
        time.sleep(0.01)
    if whole_group:
        os.killpg(proc.pid, stop)
    else:
        proc.send_signal(stop)
    output = output_or_fail(proc, 60, "the interrupted run did not exit")
    assert proc.returncode == 130, output
    assert "interrupted:" in output and "rerun the same command" in output
    if Path("/proc").is_dir():
        deadline = time.monotonic() + 15
        while (left := processes_with(str(tmp_path), "forkserver")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the interrupted run are still alive: {left}"
    done = {p.stem for p in out.glob("img??.png")}
    assert 3 <= len(done) < 40, "the run finished before the interrupt; the test proves nothing"
    # Written although the run was interrupted, with every image whose outputs were written.
    rows = _rows(out / "summary.csv")
    assert {name.removesuffix(".png") for name in rows} == done
    assert all(row["status"] == "ok" and int(row["regions"]) > 0 for row in rows.values())
    report = segment_folder([tmp_path / "in"], model_path, BatchOptions(out_dir=out, save=("ucm",)), CPU)
    assert report.count("skipped") == len(done) and report.count("ok") == 40 - len(done)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="signals the run's main thread (POSIX)")
def test_a_second_stop_signal_in_the_unwinding_of_a_lock_wait_still_exits_130(tmp_path, model_path):
    """The second of two stop signals lands in the ``finally`` of the lock wait that the first
    broke off, every time (tests/processes.py): before, "internal error: RuntimeError: release
    unlocked lock" and exit 2. Which wait of the run is broken off varies (a decode's, a pool
    thread's start); only what holds for every one is checked."""
    _forty_images(tmp_path / "in")
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from processes import stop_twice_in_a_lock_wait; "
        "stop_twice_in_a_lock_wait('run_jobs'); from wnetcli.cli import main; "
        "main(['segment', 'in', '--out', 'out', '--device', 'cpu', '--save', 'ucm', '--model', sys.argv[1]])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, HELPERS, str(model_path)], cwd=tmp_path,
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = output_or_fail(proc, 120, "the interrupted run did not exit")
    assert proc.returncode == 130 and "rerun the same command" in output, output
    assert "internal error" not in output
    if Path("/proc").is_dir():
        deadline = time.monotonic() + 15
        while (left := processes_with(str(tmp_path), "forkserver")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes of the interrupted run are still alive: {left}"


def test_a_rerun_keeps_the_size_and_regions_of_skipped_images_in_the_summary(tmp_path, images, model_path):
    options = BatchOptions(out_dir=tmp_path / "out", recursive=True)
    segment_folder([images], model_path, options, CPU)
    first = _rows(options.summary_path)
    report = segment_folder([images], model_path, options, CPU)
    assert report.count("skipped") == 4
    again = _rows(options.summary_path)
    for name, row in first.items():
        if row["status"] == "ok":
            assert again[name]["status"] == "skipped"
            sizes = ("width", "height", "regions")
            assert [again[name][k] for k in sizes] == [row[k] for k in sizes]
            assert int(row["regions"]) > 0
    assert again["broken.jpg"]["status"] == "failed"  # a failure is tried again, not carried over


def test_an_output_folder_inside_the_input_folder_is_not_segmented_again(tmp_path, images, model_path):
    options = BatchOptions(out_dir=images / "masks", recursive=True, save=("overlay",))
    first = segment_folder([images], model_path, options, CPU)
    again = segment_folder([images], model_path, options, CPU)
    assert first.found == again.found == 5  # the four images and the broken file; no overlay of ours
    assert again.count("ok") == 0 and again.count("skipped") == 4
    assert not (images / "masks" / "masks").exists()
    # Inputs inside the output folder are still found when that folder is the input itself.
    assert segment_folder([images / "masks"], model_path, BatchOptions(out_dir=images / "masks"), CPU).found > 0


def test_a_rerun_removes_what_a_killed_write_left_of_the_outputs_it_redoes(tmp_path, images, model_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".a.abcdefgh.tmp.png", out / ".a.overlay.k2_x9q0z.tmp.png"]
    foreign = out / ".notes.abcdefgh.tmp.txt"  # not an output of this run: left alone
    for path in [*stale, foreign]:
        path.write_bytes(b"partial")
    segment_folder([images / "a.png"], model_path, BatchOptions(out_dir=out, save=("overlay",)), CPU)
    assert not any(p.exists() for p in stale) and foreign.exists()
    assert (out / "a.png").is_file() and (out / "a.overlay.png").is_file()


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_cli_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, images, model_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if kind == "a file":
        Path("out").write_text("")
        expected = "error: output folder out is a file, not a folder\n"
    else:
        Path("out").mkdir()
        import wnetcli.atomic

        monkeypatch.setattr(wnetcli.atomic, "_writable", lambda folder: False)  # a read-only mount, say
        expected = "error: cannot write to output folder out (read-only or no permission)\n"
    result = runner.invoke(app, ["segment", str(images), "--out", "out", "--model", str(model_path)])
    assert result.exit_code == 1 and result.output == expected


def test_one_path_as_a_string_is_one_input(tmp_path, images, model_path):
    report = segment_folder(str(images), model_path, BatchOptions(out_dir=tmp_path / "out"), CPU)
    assert report.found == 4  # not "input not found: /" for its first character


def test_a_script_without_a_main_guard_gets_an_error_that_says_so(tmp_path, images, model_path):
    # The worker processes import the calling script again; unguarded, it starts a run in each.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from wnetcli.segmentation import BatchOptions, SegmentOptions, segment_folder\n"
        f"segment_folder({str(images)!r}, {str(model_path)!r}, BatchOptions(out_dir={str(tmp_path / 'o')!r}, "
        "workers=2), SegmentOptions(device='cpu'))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert 'without an `if __name__ == "__main__":` guard' in done.stderr.splitlines()[-1]


@pytest.mark.needs_data
def test_bsds_images_keep_their_size(tmp_path, model_path):
    val = BSDS / "images" / "val"
    if not val.is_dir():
        pytest.skip(f"BSDS500 images not found at {val}")
    sources = sorted(val.glob("*.jpg"))[:2]
    options = BatchOptions(out_dir=tmp_path / "out", save=("ucm",))
    report = segment_folder(sources, model_path, options, CPU)
    assert report.count("ok") == 2
    for source in sources:
        with Image.open(source) as image:
            width, height = image.size
        assert np.asarray(Image.open(tmp_path / "out" / f"{source.stem}.png")).shape == (height, width)
        assert read_ucm(tmp_path / "out" / f"{source.stem}.ucm.png").shape == (2 * height + 1, 2 * width + 1)


def test_cli_segments_with_the_shipped_model_when_no_model_is_given(tmp_path, monkeypatch):
    from wnetcli.segmentation.pipeline import DEFAULT_MODEL

    assert DEFAULT_MODEL.is_file(), f"the shipped model is missing: {DEFAULT_MODEL}"
    monkeypatch.chdir(tmp_path)
    _save(tmp_path / "one.png", squares_image(40))
    result = runner.invoke(app, ["segment", "one.png", "--out", "out", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    labels = np.asarray(Image.open(tmp_path / "out" / "one.png"))
    assert labels.shape == (40, 40) and labels.min() >= 1


def test_cli_keeps_soft_maps_only_when_saving_them_and_fast_coarsens_the_grid(tmp_path, model_path, monkeypatch):
    import wnetcli.segmentation as segmentation

    seen = []
    original = segmentation.segment_folder

    def spy(inputs, model, batch_options, segment_options, **kwargs):
        seen.append((segment_options.soft_maps, segment_options.recipe.grid.downsample))
        return original(inputs, model, batch_options, segment_options, **kwargs)

    monkeypatch.setattr(segmentation, "segment_folder", spy)
    monkeypatch.chdir(tmp_path)
    _save(tmp_path / "one.png", squares_image(24))
    common = ["segment", "one.png", "--model", str(model_path), "--device", "cpu", "--workers", "0"]
    result = runner.invoke(app, [*common, "--out", "plain"])
    assert result.exit_code == 0 and "was checked but not run" in result.output, result.output
    result = runner.invoke(app, [*common, "--out", "with-probs", "--save", "probs"])
    assert result.exit_code == 0 and "not run" not in result.output, result.output
    result = runner.invoke(app, [*common, "--out", "fast", "--fast", "--save", "ucm"])
    assert result.exit_code == 0, result.output
    assert seen == [(False, 1), (True, 1), (False, 2)]
    assert read_ucm(tmp_path / "fast" / "one.ucm.png").shape == (49, 49)
    assert np.load(tmp_path / "with-probs" / "one.probs.npy").shape[1:] == (24, 24)
    assert np.load(tmp_path / "with-probs" / "one.probs.npy").shape[0] >= 2


def test_main_process_imports_no_scipy_and_the_worker_preload_exists():
    import importlib

    from wnetcli.segmentation.batch.running import _WORKER_PRELOAD

    # A folder run's main process only decodes and runs the network: building its options must
    # not import scipy.ndimage / scipy.sparse (~0.4 s); the fork server imports them instead.
    code = (
        "import sys, wnetcli.segmentation, wnetcli.segmentation.postprocess; "
        "print(sorted(m for m in ('scipy.ndimage', 'scipy.sparse', 'skimage') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    # The fork server skips a preload name that fails to import without a word: check them here.
    for name in _WORKER_PRELOAD:
        importlib.import_module(name)


def test_resolve_workers():
    from wnetcli.segmentation.batch.running import MAX_AUTO_WORKERS, resolve_workers

    cores = min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    assert resolve_workers(None, 1) == 0  # one image: nothing to overlap with
    assert resolve_workers(None, 100) == cores
    assert resolve_workers(None, 2) == min(cores, 2)
    assert resolve_workers(3, 1) == 1 and resolve_workers(3, 10) == 3 and resolve_workers(0, 10) == 0


def test_a_stop_signal_between_an_inference_submit_and_its_record_loses_no_written_image(
    tmp_path, images, model_path, monkeypatch
):
    """A Ctrl-C that lands in the inference pool's submit, after the call started and before
    run_jobs keeps its future: the image is written all the same, and must be in the summary."""
    from concurrent.futures import Future, ThreadPoolExecutor

    original = ThreadPoolExecutor.submit
    written = []

    def submit_then_interrupt(self, fn, *args, **kwargs):
        future = original(self, fn, *args, **kwargs)
        if self._thread_name_prefix.startswith("wnet-infer"):
            for _, outcome in future.result():  # the call ran and its images were written...
                written.append(outcome.result() if isinstance(outcome, Future) else outcome)
            raise KeyboardInterrupt  # ...and the signal comes before run_jobs records the future
        return future

    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit_then_interrupt)
    options = BatchOptions(out_dir=tmp_path / "out", workers=1)
    with pytest.raises(KeyboardInterrupt):
        segment_folder([images], model_path, options, CPU)
    assert written and all(record.status == "ok" for record in written)
    rows = _rows(options.summary_path)
    for record in written:
        assert rows[record.image]["status"] == "ok", rows
