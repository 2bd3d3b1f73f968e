"""An annotation file of another size than its image is the annotation file's error, not the method's."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from typer.testing import CliRunner

from wnetcli.cli import app
from wnetcli.errors import DataError
from wnetcli.evaluation import EvaluationOptions, ResultsDir, evaluate, find_split, load_ground_truth

runner = CliRunner()


def _annotations(path, shape):
    """A one-annotator BSDS .mat of two horizontal bands, of size ``shape`` (H, W)."""
    seg = np.ones(shape, np.uint16)
    seg[shape[0] // 2 :] = 2
    bdry = np.zeros(shape, np.uint8)
    bdry[shape[0] // 2] = 1
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = {"Segmentation": seg, "Boundaries": bdry}
    savemat(path, {"groundTruth": cells})


@pytest.fixture
def tree(tmp_path):
    """A val split whose image 101085 is 30x40 and whose annotations are 20x40, and a results
    folder holding a ucm2 of the image's size."""
    images, gt, results = tmp_path / "images" / "val", tmp_path / "groundTruth" / "val", tmp_path / "results"
    for folder in (images, gt, results):
        folder.mkdir(parents=True)
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(images / "101085.jpg")
    _annotations(gt / "101085.mat", (20, 40))
    np.save(results / "101085.npy", np.zeros((61, 81)))
    return tmp_path


def test_load_ground_truth_names_the_annotation_file_of_another_size(tree):
    mat, jpg = tree / "groundTruth" / "val" / "101085.mat", tree / "images" / "val" / "101085.jpg"
    with pytest.raises(DataError, match=r"annotation file .*101085\.mat is 20x40 but its image .*101085\.jpg is 30x40"):
        load_ground_truth(mat, jpg)
    assert load_ground_truth(mat).shape == (20, 40)  # without an image there is nothing to compare


def test_evaluate_blames_the_annotation_file_not_the_method(tree):
    with pytest.raises(DataError) as caught:
        evaluate(find_split(tree, "val"), ResultsDir(tree / "results"), EvaluationOptions(thresholds=3))
    message = str(caught.value)
    assert "101085.mat" in message and "results on 101085" not in message


def test_cli_evaluate_names_the_annotation_file(tree, monkeypatch):
    monkeypatch.chdir(tree)
    result = runner.invoke(app, ["evaluate", "--bsds", ".", "--split", "val", "--results", "results", "--out", "o"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: annotation file "), result.output
    assert "101085.mat is 20x40" in lines[0] and "ucm2 has shape" not in lines[0]


def test_annotations_of_an_exif_rotated_image_compare_with_the_image_as_shown(tmp_path):
    # Stored 40 wide and 30 high, shown (and read by read_rgb) 30 wide and 40 high.
    image = Image.fromarray(np.zeros((30, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "r.jpg", exif=exif)
    _annotations(tmp_path / "r.mat", (40, 30))
    assert load_ground_truth(tmp_path / "r.mat", tmp_path / "r.jpg").shape == (40, 30)
