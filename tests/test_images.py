"""Reading images of every supported kind as (H, W, 3) uint8 RGB, and finding them in folders."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from wnetcli.errors import InputError
from wnetcli.images import find_images, read_rgb

RNG = np.random.default_rng(0)


def _write_png16_rgb(path, array):
    """Write an (H, W, 3) uint16 array as a 16-bit RGB PNG (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_rgb_formats_round_trip(tmp_path, suffix):
    rgb = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(rgb).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_reads_as_rgb(tmp_path):
    rgb = np.full((9, 11, 3), (200, 30, 90), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = read_rgb(tmp_path / "a.jpg")
    assert out.shape == (9, 11, 3) and np.abs(out.astype(int) - rgb).max() <= 3


def test_grey_palette_and_rgba_become_rgb(tmp_path):
    grey = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))

    rgba = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgba[..., :3])

    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, 3:] = (10, 200, 30)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "pal.png"), rgb)


def test_16_bit_grey_is_scaled_by_bit_depth_not_by_its_maximum(tmp_path):
    grey = np.array([[0, 257 * 10, 65535], [1000, 20000, 30000]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out = read_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], np.round(grey / 257.0).astype(np.uint8))
    assert (out[..., 0] == out[..., 2]).all()


def test_16_bit_rgb_png(tmp_path):
    rgb16 = RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    _write_png16_rgb(tmp_path / "c16.png", rgb16)
    out = read_rgb(tmp_path / "c16.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    # Pillow keeps the high byte (floor of /256); exact /257 rounding differs by at most 1.
    assert np.abs(out.astype(int) - np.round(rgb16 / 257.0)).max() <= 1


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)], ids=["grey", "rgb"])
def test_16_bit_tiff(tmp_path, shape):
    tifffile = pytest.importorskip("tifffile", reason="tifffile writes the 16-bit TIFF fixtures")
    data = RNG.integers(0, 65536, shape, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t16.tif", data)
    out = read_rgb(tmp_path / "t16.tif")
    expected = np.round(data / 257.0)
    if data.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=2)
    assert out.shape == (5, 7, 3) and np.abs(out.astype(int) - expected).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[:8, :8] = (255, 0, 0)  # a red top-left block, to see where it goes
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = read_rgb(tmp_path / "rot.jpg")
    assert out.shape == (24, 16, 3)
    assert out[2, -3, 0] > 200 and out[2, 2, 0] < 50  # the block moved to the top right


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_corrupt_files_raise_input_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="broken.png"):
        read_rgb(path)


def test_truncated_jpeg_is_an_input_error(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.jpg"):
        read_rgb(tmp_path / "t.jpg")


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_rgb(tmp_path / "nope.png")


def test_find_images_recursive_hidden_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.JPG", "a.png", ".hidden.png", "notes.txt", "sub/c.tif"]:
        (tmp_path / name).write_bytes(b"x")
    flat = find_images([tmp_path], recursive=False)
    assert [str(rel) for _, rel in flat] == ["a.png", "b.JPG"]
    deep = find_images([tmp_path], recursive=True)
    assert [rel.as_posix() for _, rel in deep] == ["a.png", "b.JPG", "sub/c.tif"]
    single = find_images([tmp_path / "sub" / "c.tif"])
    assert [str(rel) for _, rel in single] == ["c.tif"]
    with pytest.raises(InputError, match="not found"):
        find_images([tmp_path / "missing"])
