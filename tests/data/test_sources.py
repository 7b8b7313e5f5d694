"""`load_image`, the one judgement of whether an image file is usable: damaged files are named,
unusual pixel formats become 8-bit RGB with the right values, bombs are refused undecoded."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import yolo4.data.sources as sources
from yolo4.data.dataset import load_dataset
from yolo4.data.formats.common import MAX_IMAGE_PIXELS, read_image_header
from yolo4.data.sources import load_image
from yolo4.errors import DataError

RNG = np.random.default_rng(0)
RGB = (RNG.random((40, 60, 3)) * 255).astype(np.uint8)


def _save(path: Path, im: Image.Image, fmt: str, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def _jpeg_bytes(rgb: np.ndarray = RGB) -> bytes:
    f = io.BytesIO()
    Image.fromarray(rgb).save(f, "JPEG", quality=95)
    return f.getvalue()


@pytest.mark.parametrize("cut", ["first 300 bytes", "half", "all but 10 bytes"])
def test_truncated_jpeg_is_named(tmp_path, cut):
    data = _jpeg_bytes()
    n = {"first 300 bytes": 300, "half": len(data) // 2, "all but 10 bytes": len(data) - 10}[cut]
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[:n])
    with pytest.raises(DataError, match=r"cut.jpg: (not a readable image: a )?truncated or corrupt"):
        load_image(p)


def test_truncated_png_is_named(tmp_path):
    p = _save(tmp_path / "full.png", Image.fromarray(RGB), "PNG")
    (tmp_path / "cut.png").write_bytes(p.read_bytes()[:-20])
    with pytest.raises(DataError, match="cut.png: not a readable image: a truncated or corrupt PNG"):
        load_image(tmp_path / "cut.png")


def test_empty_file_folder_and_non_image_are_named(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.jpg: empty file \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(DataError, match="folder.jpg: is a folder, not an image"):
        load_image(tmp_path / "folder.jpg")
    (tmp_path / "notes.jpg").write_text("these are notes, not pixels\n")
    with pytest.raises(DataError, match="notes.jpg: not an image"):
        load_image(tmp_path / "notes.jpg")


def test_wrong_extension_is_read_by_content(tmp_path):
    png_named_jpg = _save(tmp_path / "really_a_png.jpg", Image.fromarray(RGB), "PNG")
    np.testing.assert_array_equal(load_image(png_named_jpg), RGB)  # lossless, so exact
    jpg_named_png = tmp_path / "really_a_jpeg.png"
    jpg_named_png.write_bytes(_jpeg_bytes())
    assert load_image(jpg_named_png).shape == RGB.shape


def test_grey_palette_alpha_cmyk_and_16_bit_become_8_bit_rgb(tmp_path):
    grey = (RNG.random((40, 60)) * 255).astype(np.uint8)
    got = load_image(_save(tmp_path / "grey.png", Image.fromarray(grey), "PNG"))
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, 2))

    rgba = np.dstack([RGB, np.full((40, 60), 7, np.uint8)])  # nearly transparent: the colour is kept, alpha dropped
    np.testing.assert_array_equal(load_image(_save(tmp_path / "rgba.png", Image.fromarray(rgba), "PNG")), RGB)
    la = np.dstack([grey, np.full((40, 60), 255, np.uint8)])
    np.testing.assert_array_equal(
        load_image(_save(tmp_path / "la.png", Image.fromarray(la, "LA"), "PNG")), np.repeat(grey[..., None], 3, 2)
    )
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    np.testing.assert_array_equal(load_image(_save(tmp_path / "pal.png", pal, "PNG")), np.asarray(pal.convert("RGB")))

    g16 = (RNG.random((40, 60)) * 65535).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "g16.png"), g16)
    np.testing.assert_array_equal(
        load_image(tmp_path / "g16.png"), np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, 2)
    )
    c16 = (RNG.random((40, 60, 3)) * 65535).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "c16.png"), c16[..., ::-1])  # cv2 writes BGR
    np.testing.assert_array_equal(load_image(tmp_path / "c16.png"), (c16 >> 8).astype(np.uint8))

    cmyk = _save(tmp_path / "cmyk.jpg", Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=98)
    assert read_image_header(cmyk).mode == "CMYK"
    got = load_image(cmyk).astype(int)
    assert np.abs(got - RGB).mean() < 4  # JPEG loss only: not inverted, not channel-swapped


def _exif_jpeg(path: Path, orientation: int) -> Path:
    im = Image.fromarray(RGB)  # stored 60 wide x 40 high
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_ignored_as_darknet_does(tmp_path):
    p = _exif_jpeg(tmp_path / "turned.jpg", 6)
    head = read_image_header(p)
    assert head.hw == (40, 60) and head.orientation == 6 and head.swaps_axes
    assert load_image(p).shape == (40, 60, 3)  # the stored pixels, which the labels refer to


def test_labels_drawn_on_the_exif_turned_image_are_named(tmp_path):
    """A VOC file whose size is the EXIF-turned one (labelled in a viewer that applies the
    rotation): training would read boxes that do not fit the pixels, so the image is named."""
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    _exif_jpeg(tmp_path / "images" / "turned.jpg", 6)
    (tmp_path / "annotations" / "turned.xml").write_text(
        "<annotation><filename>turned.jpg</filename><size><width>40</width><height>60</height></size>"
        "<object><name>a</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>30</xmax><ymax>50</ymax></bndbox>"
        "</object></annotation>"
    )
    ds = load_dataset(tmp_path, "all", cache=False, progress=False)
    with pytest.raises(DataError, match=r"turned.jpg: image is 60x40 but its labels were made for 40x60: .*EXIF"):
        ds.load(0)


def _bomb_png(path: Path, side: int) -> Path:
    """A valid PNG of side x side black grey pixels in a few hundred KB. Its zlib stream is one
    compressed slice of rows repeated (each slice ends with a full flush, so the slices are
    independent), so the pixels are never held in memory here either."""
    row = b"\x00" * (side + 1)  # filter byte + pixels
    rows = row * 500
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(rows) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    adler = 1
    for _ in range(side // 500):
        adler = zlib.adler32(rows, adler)
    idat = b"\x78\xda" + block * (side // 500) + end + adler.to_bytes(4, "big")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    side = 20_000  # 400 million pixels (1.2 GB decoded as RGB)
    assert side * side > MAX_IMAGE_PIXELS
    bomb = _bomb_png(tmp_path / "bomb.png", side)
    assert bomb.stat().st_size < 1_000_000

    def no_decoding(*a, **k):
        raise AssertionError("the decoder was called")

    monkeypatch.setattr(sources.cv2, "imdecode", no_decoding)
    with pytest.raises(DataError, match="bomb.png: refused.*400000000 pixels"):
        load_image(bomb)
    with pytest.raises(DataError, match="bomb.png: refused"):
        read_image_header(bomb)
    # and in a dataset it is a named skip, never an exception
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    bomb.rename(root / "images" / "bomb.png")
    Image.fromarray(RGB).save(root / "images" / "ok.png")
    ds = load_dataset(root, "all", cache=False, progress=False)
    assert [p.name for p in ds.image_paths] == ["ok.png"] and "bomb.png: refused" in ds.problems[0]
