"""wnetcli.model_info: the metadata an exported model carries, and the file hash that ties it."""

from __future__ import annotations

import hashlib

import pytest

from wnetcli.errors import ModelError
from wnetcli.model_info import FORMAT_VERSION, ModelInfo, file_sha256


def test_model_info_round_trip():
    info = ModelInfo(k=12, pad_multiple=16, fp16=True, model_config={"k": 12, "depth": 4}, step=500,
                     checkpoint_sha256="ab" * 32, training_data="bsds500 train + photos", package_version="0.1.0")
    props = info.to_metadata()
    assert all(isinstance(value, str) for value in props.values())
    assert props["wnet.format_version"] == str(FORMAT_VERSION)
    assert ModelInfo.from_metadata(props) == info


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "no wnet metadata"),
        ({"wnet.format_version": str(FORMAT_VERSION + 1), "wnet.k": "4", "wnet.pad_multiple": "16"}, "upgrade wnet"),
        ({"wnet.format_version": "1", "wnet.pad_multiple": "16"}, "malformed"),
        ({"wnet.format_version": "1", "wnet.k": "four", "wnet.pad_multiple": "16"}, "malformed"),
    ],
)
def test_model_info_rejects_bad_metadata(props, message):
    with pytest.raises(ModelError, match=message):
        ModelInfo.from_metadata(props, source="m.onnx")


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"w" * 3_000_000)  # over one read chunk
    assert file_sha256(path) == hashlib.sha256(b"w" * 3_000_000).hexdigest()
