"""What ``wnet segment`` checks and records across runs: the model named with --model, the
settings of every image's outputs (runs.jsonl, summary.csv), --overwrite's leftovers, shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from onnx_models import build_prototype_model, squares_image
from PIL import Image
from typer.testing import CliRunner

from wnetcli.cli import app
from wnetcli.segmentation import BatchOptions, SegmentOptions, segment_folder

runner = CliRunner()
CPU = SegmentOptions(device="cpu", threads=1)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_prototype_model(tmp_path_factory.mktemp("model") / "proto.onnx")


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for name, size in (("a.png", 24), ("b.png", 30), ("c.png", 20)):
        Image.fromarray(squares_image(size)).save(root / name)
    return root


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def runs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def _strip_metadata(source: Path, target: Path) -> Path:
    import onnx

    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.save(model, str(target))
    return target


BAD_MODELS = {
    "random bytes": lambda tmp, good: tmp.joinpath("random.onnx").write_bytes(np.random.default_rng(0).bytes(4096)),
    "truncated": lambda tmp, good: tmp.joinpath("cut.onnx").write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
    "empty": lambda tmp, good: tmp.joinpath("empty.onnx").write_bytes(b""),
    "renamed json": lambda tmp, good: tmp.joinpath("config.onnx").write_text(json.dumps({"k": 4})),
    "no wnet metadata": lambda tmp, good: _strip_metadata(good, tmp / "plain.onnx"),
}
BAD_NAMES = {
    "random bytes": "random.onnx", "truncated": "cut.onnx", "empty": "empty.onnx",
    "renamed json": "config.onnx", "no wnet metadata": "plain.onnx",
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_a_model_that_cannot_be_run_is_refused_before_any_work(tmp_path, images, model_path, kind, monkeypatch):
    BAD_MODELS[kind](tmp_path, model_path)
    bad = tmp_path / BAD_NAMES[kind]
    monkeypatch.chdir(tmp_path)
    # The default settings never run the network: the model is checked all the same.
    result = runner.invoke(app, ["segment", str(images), "--out", "out", "--model", str(bad), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and str(bad) in result.output, repr(result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_a_valid_model_that_the_settings_do_not_run_is_said_to_be_unused(tmp_path, images, model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["segment", str(images), "--out", "out", "--model", str(model_path)])
    assert result.exit_code == 0, result.output
    assert f"note: --model {model_path} was checked but not run" in " ".join(result.output.split())
    assert runs(tmp_path / "out")[-1]["network_run"] is False


def test_a_rerun_with_other_settings_keeps_the_record_of_what_made_the_outputs_and_warns(
    tmp_path, images, model_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["segment", str(images), "--out", "out", "--save", "overlay"])
    assert first.exit_code == 0, first.output
    made_by = {image: row["settings"] for image, row in rows(tmp_path / "out" / "summary.csv").items()}
    assert len(set(made_by.values())) == 1 and next(iter(made_by.values()))
    second = runner.invoke(app, ["segment", str(images), "--out", "out", "--regions", "2"])
    assert second.exit_code == 0, second.output
    assert "3 skipped image(s) were made earlier with other settings" in " ".join(second.output.split())
    after = rows(tmp_path / "out" / "summary.csv")
    assert {image: row["status"] for image, row in after.items()} == dict.fromkeys(made_by, "skipped")
    assert {image: row["settings"] for image, row in after.items()} == made_by  # not the rerun's settings
    entries = runs(tmp_path / "out")
    assert len(entries) == 2  # appended, never overwritten
    assert entries[0]["settings"] == next(iter(made_by.values())) and entries[0]["save"] == ["overlay"]
    assert entries[0]["cut"]["regions"] is None and entries[1]["cut"]["regions"] == 2
    assert entries[1]["settings"] != entries[0]["settings"]
    # The same settings again: skipped without a warning.
    third = runner.invoke(app, ["segment", str(images), "--out", "out", "--save", "overlay"])
    assert third.exit_code == 0 and "other settings" not in third.output


def test_overwrite_redoes_an_image_and_removes_the_extras_the_earlier_run_wrote(tmp_path, images, model_path):
    out = tmp_path / "out"
    segment_folder([images], model_path, BatchOptions(out_dir=out, save=("probs", "overlay", "ucm"), workers=0),
                   SegmentOptions(device="cpu", threads=1))
    assert (out / "a.probs.npy").is_file() and (out / "a.overlay.png").is_file()
    report = segment_folder([images], model_path, BatchOptions(out_dir=out, save=("ucm",), ucm_format="npy",
                                                               overwrite=True, workers=0), CPU)
    assert report.count("ok") == 3 and not report.made_otherwise
    for stem in ("a", "b", "c"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.ucm.npy").is_file()
        for extra in (".probs.npy", ".overlay.png", ".ucm.png"):
            assert not (out / f"{stem}{extra}").exists(), extra


def test_the_last_shard_to_finish_merges_the_shard_summaries(tmp_path, images, model_path):
    out = tmp_path / "out"
    first = segment_folder([images], model_path, BatchOptions(out_dir=out, shard=(0, 2), workers=0), CPU)
    assert first.merged_summary is None and not (out / "summary.csv").exists()
    second = segment_folder([images], model_path, BatchOptions(out_dir=out, shard=(1, 2), workers=0), CPU)
    assert second.merged_summary == out / "summary.csv"
    merged = rows(out / "summary.csv")
    assert set(merged) == {"a.png", "b.png", "c.png"}
    assert all(row["status"] == "ok" and row["settings"] for row in merged.values())
    # A shard that reruns after both finished writes the same merged rows.
    again = segment_folder([images], model_path, BatchOptions(out_dir=out, shard=(0, 2), workers=0), CPU)
    assert again.merged_summary == out / "summary.csv"
    assert {image: row["status"] for image, row in rows(out / "summary.csv").items()} == {
        image: ("skipped" if row["status"] == "ok" and image in {r.image for r in again.records} else row["status"])
        for image, row in merged.items()
    }


def test_saving_the_boundary_map_runs_a_boundary_model_and_writes_it(tmp_path, images):
    torch = pytest.importorskip("torch", reason="exporting a two-output model needs the train extra")
    from export.onnx_export import ExportOptions, export_onnx
    from training.checkpoint import save_checkpoint
    from training.config import ModelConfig
    from training.model import WNet

    torch.manual_seed(0)
    network = WNet(ModelConfig(k=4, base_width=4, depth=2, boundary_head=True))
    checkpoint = save_checkpoint(tmp_path / "b.pt", network, step=1)
    model = export_onnx(checkpoint, tmp_path / "b.onnx", options=ExportOptions(verify_sizes=((8, 8),))).path
    out = tmp_path / "out"
    report = segment_folder([images], model, BatchOptions(out_dir=out, save=("boundaries",), workers=0), CPU)
    assert report.network_run and report.count("ok") == 3
    boundary = np.asarray(Image.open(out / "a.boundaries.png"))
    assert boundary.shape == (24, 24) and boundary.dtype == np.uint8
    # A model without the boundary output is refused before any work.
    plain = build_prototype_model(tmp_path / "plain.onnx")
    from wnetcli.errors import ModelError

    with pytest.raises(ModelError, match="does not output"):
        segment_folder([images], plain, BatchOptions(out_dir=tmp_path / "o2", save=("boundaries",)), CPU)
