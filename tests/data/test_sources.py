"""Reading image files: truncated downloads are decoded as far as they go, garbage is refused."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from yolo4.data.sources import load_image
from yolo4.errors import DataError


def test_truncated_jpeg_is_decoded_as_far_as_it_goes(tmp_path, caplog):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((120, 160, 3)) * 255).astype(np.uint8), (9, 9), 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.8)])  # a download cut short
    assert cv2.imdecode(np.fromfile(cut, np.uint8), cv2.IMREAD_COLOR) is None  # OpenCV alone refuses it
    out = load_image(cut)
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8
    assert np.abs(out[:40].astype(int) - img[:40]).mean() < 4  # the part that arrived is the picture
    assert "truncated image file" in caplog.text


def test_garbage_is_still_refused_by_name(tmp_path):
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg at all")
    with pytest.raises(DataError, match="garbage.jpg: not a readable image"):
        load_image(bad)
