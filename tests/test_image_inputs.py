"""Inputs the folder walk used to get wrong: GIFs (first frame, walked or named) and dangling links
(a failed row naming the link, never a silent drop)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wnetcli.cli import app
from wnetcli.errors import InputError
from wnetcli.images import find_images, read_rgb

runner = CliRunner()
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _animated_gif(path: Path, size: tuple[int, int] = (24, 32)) -> Path:
    """A three-frame GIF (red, green, blue) of (H, W) ``size``."""
    frames = [Image.fromarray(np.full((*size, 3), colour, np.uint8)) for colour in (RED, GREEN, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3  # Pillow kept the frames apart (they differ)
    return path


def _dangling(folder: Path, name: str = "gone.jpg") -> Path:
    link = folder / name
    os.symlink(folder / "no-such-file.jpg", link)
    assert link.is_symlink() and not link.exists()
    return link


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


# --- GIF ---


def test_an_animated_gif_reads_as_its_first_frame(tmp_path):
    rgb = read_rgb(_animated_gif(tmp_path / "anim.gif"))
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
    assert (rgb == RED).all()


def test_a_gif_is_found_when_its_folder_is_walked_as_when_it_is_named(tmp_path):
    gif = _animated_gif(tmp_path / "anim.gif")
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    walked = find_images([tmp_path])
    assert [rel.as_posix() for _, rel in walked] == ["anim.gif", "b.png"]
    assert find_images([gif]) == [(gif.resolve(), Path("anim.gif"))]


def test_segment_writes_a_gif_of_a_walked_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    _animated_gif(tmp_path / "in" / "anim.gif", (40, 40))
    result = runner.invoke(app, ["segment", "in", "--out", "out", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "out" / "anim.png")).shape == (40, 40)
    assert _rows(tmp_path / "out" / "summary.csv")["anim.gif"]["status"] == "ok"


# --- dangling symbolic links ---


def test_find_images_lists_a_dangling_link_under_its_own_name(tmp_path):
    link = _dangling(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    found = find_images([tmp_path])
    assert [rel.as_posix() for _, rel in found] == ["a.png", "gone.jpg"]
    assert dict((rel.as_posix(), path) for path, rel in found)["gone.jpg"] == link.absolute()


def test_reading_a_dangling_link_names_it_and_says_why(tmp_path):
    link = _dangling(tmp_path)
    with pytest.raises(InputError, match=r"cannot read image .*gone\.jpg: dangling symbolic link to .*no-such-file"):
        read_rgb(link)
    with pytest.raises(InputError, match=r"input not found: .*gone\.jpg: dangling symbolic link"):
        find_images([link])


def test_a_link_loop_is_listed_and_its_read_names_it(tmp_path):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    assert [rel.as_posix() for _, rel in find_images([tmp_path])] == ["loop.png"]
    with pytest.raises(InputError, match=r"cannot read image .*loop\.png"):
        read_rgb(loop)


def test_segment_reports_a_dangling_link_as_a_failed_row_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(folder / "a.png")
    _dangling(folder)
    result = runner.invoke(app, ["segment", "in", "--out", "out", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 1, result.output
    assert "gone.jpg" in result.output
    rows = _rows(tmp_path / "out" / "summary.csv")
    assert rows["a.png"]["status"] == "ok"
    assert rows["gone.jpg"]["status"] == "failed"
    assert "gone.jpg" in rows["gone.jpg"]["message"] and "dangling symbolic link" in rows["gone.jpg"]["message"]


def test_training_warns_about_a_dangling_link_like_any_unreadable_image(tmp_path):
    pytest.importorskip("torch", reason="training needs torch")
    from training.data import TrainingImages, find_training_images

    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "a.png")
    link = _dangling(tmp_path)
    paths = find_training_images(tmp_path)
    assert link.absolute() in paths
    warnings: list[str] = []
    images = TrainingImages(paths, max_side=0, in_memory=True, warn=warnings.append)
    assert len(images) == 1
    assert len(warnings) == 1 and "gone.jpg" in warnings[0] and "dangling symbolic link" in warnings[0]
