"""TrainConfig: presets, config files, flag overrides and the learning-rate and dropout schedules."""

from __future__ import annotations

import json

import pytest

from training.config import PRESETS, ModelConfig, TrainConfig, load_config_file, resolve_train_config
from wnetcli.errors import InputError


def test_paper_preset_is_the_papers_set_up():
    paper = PRESETS["paper"]
    assert (paper.size, paper.batch_size, paper.iterations) == (224, 10, 50_000)
    assert (paper.optimizer, paper.lr, paper.model.dropout) == ("sgd", 0.003, 0.65)
    assert paper.model == ModelConfig(k=20, base_width=64, depth=4, dropout=0.65)


def test_small_preset_is_quarter_width_at_128():
    small = PRESETS["small"]
    assert (small.model.base_width, small.size, small.batch_size, small.model.k) == (16, 128, 4, 20)


def test_schedules():
    paper = PRESETS["paper"]
    assert paper.lr_at(0) == paper.lr_at(9_999) == 0.003
    assert paper.lr_at(10_000) == pytest.approx(0.0015) and paper.lr_at(49_999) == pytest.approx(0.003 / 16)
    assert paper.dropout_at(24_999) == 0.65 and paper.dropout_at(25_000) == 0.3
    literal = TrainConfig.from_dict({"lr_decay_every": 1000, "lr_decay_factor": 0.1}, base=paper)
    assert literal.lr_at(2_000) == pytest.approx(0.003 * 0.01)


def test_flags_override_the_file_which_overrides_the_preset(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('iterations = 7\nlr = 1\n[model]\nk = 5\nupsampling = "resize_conv"\n')
    config = resolve_train_config("paper", path, {"lr": 0.5, "k": None, "batch_size": None})
    assert (config.iterations, config.lr, config.model.k, config.model.upsampling) == (7, 0.5, 5, "resize_conv")
    assert isinstance(config.lr, float) and config.size == 224  # from the preset
    assert config.model.base_width == 64


def test_json_config_round_trips(tmp_path):
    config = TrainConfig.from_dict({"k": 4, "recon_weight": 3.0, "optimizer": "sgd"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_config_file(path) == config.to_dict()
    assert resolve_train_config("small", path) == config


@pytest.mark.parametrize(
    "values, message",
    [
        ({"iterationz": 3}, "unknown training config keys: iterationz"),
        ({"model": {"width": 3}}, "unknown training config keys: width"),
        ({"iterations": "ten"}, "iterations must be int"),
        ({"flip": 1}, "flip must be bool"),
        ({"batch_size": True}, "batch_size must be int"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"lr_decay_factor": 2.0}, "lr_decay_factor"),
        ({"ncut_weight": 0.0, "recon_weight": 0.0}, "cannot all be 0"),
        ({"k": 1}, "k must be at least 2"),
    ],
)
def test_bad_settings_are_input_errors(values, message):
    with pytest.raises(InputError, match=message):
        TrainConfig.from_dict(values)


def test_bad_config_files(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_config_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="cannot parse"):
        load_config_file(broken)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(InputError, match="table of settings"):
        load_config_file(listing)
    with pytest.raises(InputError, match="preset must be one of"):
        resolve_train_config("huge")


def test_a_teacher_means_boundary_training_unless_the_config_says_otherwise(tmp_path):
    plain = resolve_train_config("small")
    assert (plain.boundary_weight, plain.boundaries_from, plain.model.boundary_head) == (0.0, "", False)
    config = resolve_train_config("small", None, {"boundaries_from": "default"})
    assert (config.boundary_weight, config.model.boundary_head, config.teacher_mirror) == (1.0, True, True)
    # Boundary-only fine-tuning: the other two weights may be 0 once the boundary update is on.
    only = resolve_train_config("small", None, {"boundaries_from": "fast", "ncut_weight": 0.0, "recon_weight": 0.0})
    assert (only.ncut_weight, only.recon_weight, only.boundary_weight) == (0.0, 0.0, 1.0)
    path = tmp_path / "run.toml"
    path.write_text('boundary_weight = 0.5\n[model]\nboundary_head = true\n')
    config = resolve_train_config("small", path, {"boundaries_from": "default"})
    assert (config.boundary_weight, config.model.boundary_head) == (0.5, True)
    # A weight in the file that needs a teacher from the flags is checked with both together.
    path.write_text('boundary_weight = 2.0\nboundaries_from = "fast"\n')
    assert resolve_train_config("small", path, {"boundary_weight": 3.0}).boundary_weight == 3.0
    path.write_text('[model]\nboundary_head = false\n')
    with pytest.raises(InputError, match="needs model.boundary_head"):
        resolve_train_config("small", path, {"boundaries_from": "default"})
    with pytest.raises(InputError, match="boundary_weight must be at least 0"):
        TrainConfig(boundary_weight=-1.0)
