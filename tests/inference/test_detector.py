"""yolo4.inference.detector: pre-processing, Detector, results, and the image sources it reads."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo4.data.sources import (
    ImageSource,
    VideoSource,
    as_rgb_array,
    load_image,
    resolve_sources,
)
from yolo4.errors import DataError, WeightsError
from yolo4.inference.detector import Detections, Detector
from yolo4.inference.preprocess import letterbox, preprocess, stretch
from yolo4.ops.nms import PostprocessConfig


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------ pre-processing
def test_stretch_geometry_and_inverse():
    img = np.zeros((100, 200, 3), np.uint8)
    out, info = stretch(img, (64, 64))
    assert out.shape == (64, 64, 3)
    assert info.scale_xy == (0.32, 0.64) and info.pad_xy == (0.0, 0.0)
    torch.testing.assert_close(
        info.to_original(torch.tensor([[32.0, 8.0, 64.0, 24.0]])), torch.tensor([[100.0, 12.5, 200.0, 37.5]])
    )


def test_letterbox_geometry_padding_and_content():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 50:90] = 255  # a white box at xyxy [50, 40, 90, 60]
    out, info = letterbox(img, (64, 64))
    assert out.shape == (64, 64, 3)
    # long side fills: 200 -> 64, 100 -> 100*64//200 = 32 rows, centred: 16 gray rows above and below
    assert info.scale_xy == (0.32, 0.32) and info.pad_xy == (0.0, 16.0)
    assert (out[:16] == 127).all() and (out[48:] == 127).all()
    ys, xs = np.nonzero(out[..., 0] > 200)
    expected = info.to_input(torch.tensor([[50.0, 40.0, 90.0, 60.0]]))[0].tolist()  # [16, 28.8, 28.8, 35.2]
    assert abs(xs.min() - expected[0]) <= 1 and abs(xs.max() + 1 - expected[2]) <= 1
    assert abs(ys.min() - expected[1]) <= 1 and abs(ys.max() + 1 - expected[3]) <= 1
    # the inverse clips to the image: a box reaching into the top padding
    torch.testing.assert_close(
        info.to_original(torch.tensor([[32.0, 8.0, 64.0, 24.0]])), torch.tensor([[100.0, 0.0, 200.0, 25.0]])
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("resize", [stretch, letterbox])
def test_inverse_mapping_round_trips(seed, resize):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(20, 900)), int(rng.integers(20, 900))
    ih, iw = 32 * int(rng.integers(1, 20)), 32 * int(rng.integers(1, 20))
    _, info = resize(np.zeros((h, w, 3), np.uint8), (ih, iw))
    p = torch.from_numpy(rng.uniform(0, 1, (10, 2)) * [w, h]).float()
    q = torch.from_numpy(rng.uniform(0, 1, (10, 2)) * [w, h]).float()
    boxes = torch.cat([torch.minimum(p, q), torch.maximum(p, q)], 1)  # (10, 4) inside the image
    inp = info.to_input(boxes)
    assert (inp[:, 0::2] >= info.pad_xy[0] - 1e-3).all() and (inp[:, 0::2] <= iw - info.pad_xy[0] + 1e-3).all()
    torch.testing.assert_close(info.to_original(inp), boxes, atol=1e-3, rtol=1e-5)


def test_preprocess_batch_is_rgb_scaled_nchw():
    a = np.zeros((10, 20, 3), np.uint8)
    a[..., 0] = 255  # red
    b = np.full((30, 30, 3), 51, np.uint8)
    x, infos = preprocess([a, b], (32, 32), "stretch")
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x[0, 0].min().item() == 1.0 and x[0, 1].max().item() == 0.0
    assert x[1].max().item() == pytest.approx(0.2)
    assert [i.orig_hw for i in infos] == [(10, 20), (30, 30)]


def test_as_rgb_array_accepts_gray_rgba_float_and_pil():
    from PIL import Image

    gray = np.full((4, 5), 9, np.uint8)
    assert as_rgb_array(gray).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    assert as_rgb_array(rgba).shape == (4, 5, 3)
    assert as_rgb_array(np.full((2, 2, 3), 0.5, np.float32)).max() == 127
    pil = Image.fromarray(np.full((3, 4, 3), [10, 20, 30], np.uint8))
    assert as_rgb_array(pil)[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(DataError):
        as_rgb_array(np.zeros((2, 2, 2)))


def test_load_image_reports_file_by_name(tmp_path):
    with pytest.raises(DataError, match="missing.jpg: no such file"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="corrupt.jpg: not an image"):
        load_image(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png"):
        load_image(tmp_path / "empty.png")
    img = np.zeros((6, 7, 3), np.uint8)
    img[..., 2] = 200  # blue in RGB
    got = load_image(_write(tmp_path / "ok.png", img))
    assert got.shape == (6, 7, 3) and got[0, 0].tolist() == [0, 0, 200]


# ------------------------------------------------------------------ the detector
@pytest.mark.parametrize(
    "resize,expected", [("stretch", [100.0, 12.5, 200.0, 37.5]), ("letterbox", [100.0, 0.0, 200.0, 25.0])]
)
def test_detector_maps_boxes_back_to_the_original(tiny_cfg, fake_runner, resize, expected):
    det = Detector(tiny_cfg, names=["a", "b"], resize=resize, runner=fake_runner)
    img = np.zeros((100, 200, 3), np.uint8)
    [r] = det(img)
    assert isinstance(r, Detections) and len(r) == 1
    np.testing.assert_allclose(r.boxes, [expected], atol=1e-4)
    assert r.class_ids.tolist() == [1] and r.labels == ["b"]
    assert r.scores[0] == pytest.approx(1 / (1 + math.exp(-5)) ** 2, rel=1e-5)
    assert r.image_hw == (100, 200) and r.path is None
    assert set(r.timings) == {"preprocess", "network", "postprocess"} and all(v >= 0 for v in r.timings.values())
    drawn = r.draw()
    assert drawn.shape == img.shape and drawn.any() and not img.any()  # drawn on a copy
    d = r.to_dict()
    assert d["width"] == 200 and d["height"] == 100
    assert d["detections"][0]["class_name"] == "b" and d["detections"][0]["box"] == pytest.approx(expected, abs=0.01)


def test_resize_default_follows_the_cfg(tiny_cfg, fake_runner, tmp_path):
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(tiny_cfg.read_text().replace("channels=3", "channels=3\nletter_box=1"))
    assert Detector(cfg, runner=fake_runner).resize == "letterbox"
    assert Detector(cfg, runner=fake_runner, resize="stretch").resize == "stretch"
    cfg.write_text(tiny_cfg.read_text())
    assert Detector(cfg, runner=fake_runner).resize == "stretch"


def test_detector_decoded_runner_and_conf(tiny_cfg):
    from yolo4.ops.boxes import DecodedHeads

    def decoded(x):  # a back-end that decodes itself, returning numpy
        b = x.shape[0]
        return DecodedHeads(
            np.tile(np.array([[[0, 0, 32, 32]]], np.float32), (b, 1, 1)),
            np.full((b, 1), 0.5, np.float32),
            np.tile(np.array([[[0.2, 0.6]]], np.float32), (b, 1, 1)),
        )

    det = Detector(tiny_cfg, runner=decoded, postprocess=PostprocessConfig(conf=0.25))
    rs = det([np.zeros((64, 128, 3), np.uint8)] * 3, batch_size=2)
    assert len(rs) == 3 and all(r.class_ids.tolist() == [1] for r in rs)
    np.testing.assert_allclose(rs[0].boxes, [[0, 0, 64, 32]])
    assert rs[0].names == ["0", "1"]  # ids when no names are known
    assert (
        len(
            Detector(tiny_cfg, runner=decoded, postprocess=PostprocessConfig(conf=0.3))(np.zeros((8, 8, 3), np.uint8))[
                0
            ]
        )
        == 0
    )


def test_detector_refuses_random_weights_and_bad_names(tiny_cfg, fake_runner, tmp_path):
    with pytest.raises(WeightsError, match="AlexeyAB/darknet/releases"):
        Detector(tiny_cfg)
    names = tmp_path / "three.names"
    names.write_text("a\nb\nc\n")
    with pytest.raises(DataError, match="three.names: 3 class names but the model has 2"):
        Detector(tiny_cfg, names=names, runner=fake_runner)


def test_detector_accepts_a_built_module(tiny_cfg):
    from yolo4.darknet import load

    model = load(tiny_cfg)  # random weights, only the plumbing is under test
    det = Detector(model, postprocess=PostprocessConfig(conf=0.0, max_det=3))
    rs = det([np.zeros((50, 70, 3), np.uint8), np.zeros((70, 50, 3), np.uint8)])
    for r, (h, w) in zip(rs, [(50, 70), (70, 50)]):
        assert len(r) == 3
        assert (r.boxes[:, 0::2] >= 0).all() and (r.boxes[:, 0::2] <= w).all()
        assert (r.boxes[:, 1::2] >= 0).all() and (r.boxes[:, 1::2] <= h).all()


def test_detector_from_zoo_name():
    with pytest.raises(WeightsError, match="yolo4 train"):
        Detector("yolov4-tiny")

    def heads(x):  # yolov4-tiny's two heads at 416: 13x13 and 26x26, nothing detected
        return [torch.full((x.shape[0], 255, 13, 13), -9.0), torch.full((x.shape[0], 255, 26, 26), -9.0)]

    det = Detector("yolov4-tiny", runner=heads)
    assert det.input_hw == (416, 416) and det.names[:2] == ["person", "bicycle"] and len(det.names) == 80
    assert det.beta_nms == pytest.approx(0.6)
    [r] = det(np.zeros((30, 40, 3), np.uint8))
    assert len(r) == 0 and r.boxes.shape == (0, 4) and r.to_dict()["detections"] == []


# ------------------------------------------------------------------ sources
def test_resolve_sources(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.jpg", "a.png"):
        _write(folder / name, np.zeros((8, 8, 3), np.uint8))
    (folder / "notes.txt").write_text("hi")
    (folder / ".hidden").write_text("x")
    (folder / "clip.mp4").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    found, problems = resolve_sources(
        [folder, tmp_path / "empty", tmp_path / "nope.jpg", str(folder / "*.png"), str(tmp_path / "*.gif"), "0"]
    )
    assert found == [
        ImageSource(folder / "a.png"),
        ImageSource(folder / "b.jpg"),
        VideoSource(path=folder / "clip.mp4"),
        ImageSource(folder / "a.png"),
        VideoSource(camera=0),
    ]
    assert len(problems) == 4
    assert any("notes.txt" in p and "not an image" in p for p in problems)
    assert any("empty" in p and "no images" in p for p in problems)
    assert any("nope.jpg" in p and "no such file" in p for p in problems)
    assert any("*.gif" in p and "no files match" in p for p in problems)


# ------------------------------------------------------------------ the real model against OpenCV DNN
def _reference_table(readme: Path) -> dict[str, list[tuple[str, float, list[float]]]]:
    """The README's OpenCV table: image -> [(class, score, xyxy)] (the README has x, y, w, h)."""
    table = {}
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*(\w+\.jpg)\s*\|(.*)\|\s*$", line)
        if not m:
            continue
        dets = []
        pattern = r"([a-z][a-z ]*?) (\d\.\d+) \[(-?\d+) (-?\d+) (\d+) (\d+)\]"
        for name, score, x, y, w, h in re.findall(pattern, m.group(2)):
            dets.append((name.strip(), float(score), [float(x), float(y), float(x) + float(w), float(y) + float(h)]))
        table[m.group(1)] = dets
    return table


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _assert_matches_table(results: list[Detections], table) -> None:
    assert len(results) == 3
    for r in results:
        expected = table[Path(r.path).name]
        got = list(zip(r.labels, r.scores.tolist(), r.boxes.tolist()))
        assert sorted(g[0] for g in got) == sorted(e[0] for e in expected), r.path
        unmatched = list(got)
        for name, score, box in expected:
            best = max((g for g in unmatched if g[0] == name), key=lambda g: _iou(g[2], box))
            assert _iou(best[2], box) >= 0.9 and abs(best[1] - score) <= 0.02, (r.path, name, score, best)
            unmatched.remove(best)


def _fastest(reference: Path):
    m = reference / "models"
    images = [reference / "images" / f"{n}.jpg" for n in ("dog", "horses", "person")]
    return m / "yolo-fastest-1.1.cfg", m / "yolo-fastest-1.1.weights", m / "coco.names", images


def test_yolo_fastest_matches_opencv_table(reference):
    cfg, weights, names, images = _fastest(reference)
    table = _reference_table(reference / "README.md")
    assert sum(len(v) for v in table.values()) == 15  # the parser read the whole table
    det = Detector(
        cfg, weights, names=names, img_size=320, resize="stretch", postprocess=PostprocessConfig(conf=0.25, iou=0.45)
    )
    _assert_matches_table(det(images), table)


def test_pipeline_on_opencv_heads_matches_opencv_table(reference):
    """Pre-processing, decoding and NMS alone: the network step is OpenCV DNN's own conv outputs."""
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no darknet reader (needs opencv<5)")
    cfg, weights, names, images = _fastest(reference)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    head_convs = [
        n for n in net.getLayerNames() if n.startswith("conv_") and f"yolo_{int(n[5:]) + 1}" in net.getLayerNames()
    ]

    def opencv_runner(x: torch.Tensor) -> list[np.ndarray]:
        net.setInput(x.numpy())
        return list(net.forward(head_convs))

    det = Detector(cfg, names=names, img_size=320, resize="stretch", runner=opencv_runner)
    _assert_matches_table(det(images, batch_size=1), _reference_table(reference / "README.md"))
