"""yolo4.engine.predict: pre-processing, Detector, results, sources and the detect run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo4.engine.predict import (
    Detections,
    Detector,
    ImageSource,
    VideoSource,
    as_rgb_array,
    letterbox,
    load_image,
    preprocess,
    resolve_sources,
    run_detect,
    stretch,
)
from yolo4.errors import DataError, WeightsError

TINY_CFG = """
[net]
width=64
height=64
channels=3

[maxpool]
size=32
stride=32

[convolutional]
filters=7
size=1
stride=1
pad=0
activation=linear

[yolo]
mask=0
anchors=32,16, 10,10
classes=2
num=2
"""


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    p = tmp_path / "tiny.cfg"
    p.write_text(TINY_CFG)
    return p


def fake_runner(x: torch.Tensor) -> list[torch.Tensor]:
    """One detection per image, at grid cell (y=0, x=1) of a 2x2 grid, class 1: in input
    pixels the box is centred (48, 16), anchor-sized 32x16 -> [32, 8, 64, 24]."""
    out = torch.full((x.shape[0], 7, 2, 2), -10.0)
    out[:, 0:4, 0, 1] = 0.0
    out[:, 4, 0, 1] = 5.0  # objectness
    out[:, 6, 0, 1] = 5.0  # class 1
    return [out]


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------ pre-processing
def test_stretch_geometry_and_inverse():
    img = np.zeros((100, 200, 3), np.uint8)
    out, info = stretch(img, (64, 64))
    assert out.shape == (64, 64, 3)
    assert info.scale_xy == (0.32, 0.64) and info.pad_xy == (0.0, 0.0)
    torch.testing.assert_close(info.to_original(torch.tensor([[32.0, 8.0, 64.0, 24.0]])),
                               torch.tensor([[100.0, 12.5, 200.0, 37.5]]))


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
    torch.testing.assert_close(info.to_original(torch.tensor([[32.0, 8.0, 64.0, 24.0]])),
                               torch.tensor([[100.0, 0.0, 200.0, 25.0]]))


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
    with pytest.raises(DataError, match="corrupt.jpg: not a readable image"):
        load_image(bad)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png"):
        load_image(tmp_path / "empty.png")
    img = np.zeros((6, 7, 3), np.uint8)
    img[..., 2] = 200  # blue in RGB
    got = load_image(_write(tmp_path / "ok.png", img))
    assert got.shape == (6, 7, 3) and got[0, 0].tolist() == [0, 0, 200]


# ------------------------------------------------------------------ the detector
@pytest.mark.parametrize("resize,expected", [("stretch", [100.0, 12.5, 200.0, 37.5]),
                                             ("letterbox", [100.0, 0.0, 200.0, 25.0])])
def test_detector_maps_boxes_back_to_the_original(tiny_cfg, resize, expected):
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


def test_resize_default_follows_the_cfg(tmp_path):
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(TINY_CFG.replace("channels=3", "channels=3\nletter_box=1"))
    assert Detector(cfg, runner=fake_runner).resize == "letterbox"
    assert Detector(cfg, runner=fake_runner, resize="stretch").resize == "stretch"
    cfg.write_text(TINY_CFG)
    assert Detector(cfg, runner=fake_runner).resize == "stretch"


def test_detector_decoded_runner_and_conf(tiny_cfg):
    from yolo4.ops.boxes import DecodedHeads

    def decoded(x):  # a back-end that decodes itself, returning numpy
        b = x.shape[0]
        return DecodedHeads(np.tile(np.array([[[0, 0, 32, 32]]], np.float32), (b, 1, 1)),
                            np.full((b, 1), 0.5, np.float32), np.tile(np.array([[[0.2, 0.6]]], np.float32), (b, 1, 1)))

    det = Detector(tiny_cfg, runner=decoded, conf=0.25)
    rs = det([np.zeros((64, 128, 3), np.uint8)] * 3, batch_size=2)
    assert len(rs) == 3 and all(r.class_ids.tolist() == [1] for r in rs)
    np.testing.assert_allclose(rs[0].boxes, [[0, 0, 64, 32]])
    assert rs[0].names == ["0", "1"]  # ids when no names are known
    assert len(Detector(tiny_cfg, runner=decoded, conf=0.3)(np.zeros((8, 8, 3), np.uint8))[0]) == 0


def test_detector_refuses_random_weights_and_bad_names(tiny_cfg, tmp_path):
    with pytest.raises(WeightsError, match="AlexeyAB/darknet/releases"):
        Detector(tiny_cfg)
    names = tmp_path / "three.names"
    names.write_text("a\nb\nc\n")
    with pytest.raises(DataError, match="three.names: 3 class names but the model has 2"):
        Detector(tiny_cfg, names=names, runner=fake_runner)


def test_detector_accepts_a_built_module(tiny_cfg):
    from yolo4.darknet import load

    model = load(tiny_cfg)  # random weights, only the plumbing is under test
    det = Detector(model, conf=0.0, max_det=3)
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
    found, problems = resolve_sources([folder, tmp_path / "empty", tmp_path / "nope.jpg", str(folder / "*.png"),
                                       str(tmp_path / "*.gif"), "0"])
    assert found == [ImageSource(folder / "a.png"), ImageSource(folder / "b.jpg"),
                     VideoSource(path=folder / "clip.mp4"), ImageSource(folder / "a.png"), VideoSource(camera=0)]
    assert len(problems) == 4
    assert any("notes.txt" in p and "not an image" in p for p in problems)
    assert any("empty" in p and "no images" in p for p in problems)
    assert any("nope.jpg" in p and "no such file" in p for p in problems)
    assert any("*.gif" in p and "no files match" in p for p in problems)


# ------------------------------------------------------------------ the detect run
def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_run_detect_images_bad_inputs_and_nothing_outside_save_dir(tiny_cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    _write(src / "one.jpg", np.zeros((100, 200, 3), np.uint8))
    _write(src / "two.png", np.full((64, 64, 3), 90, np.uint8))
    (src / "corrupt.jpg").write_bytes(b"garbage")
    (src / "readme.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    other = tmp_path / "other"
    other.mkdir()
    _write(other / "one.jpg", np.zeros((10, 10, 3), np.uint8))  # same name as in/one.jpg
    before = _tree(tmp_path)
    summary = run_detect([str(src), str(tmp_path / "empty"), "missing.jpg", str(tmp_path / "broken.avi"),
                          str(other / "one.jpg")], model=tiny_cfg, names=["a", "b"], runner=fake_runner, batch=2,
                         save_dir=tmp_path / "out", progress=False)
    assert summary.processed == 3
    err = capsys.readouterr()
    for name in ("corrupt.jpg", "readme.txt", "empty", "missing.jpg", "broken.avi"):
        assert any(name in p for p in summary.problems), name
        assert name in err.err
    assert "pre-process" in err.out and "network" in err.out and "post-process" in err.out
    new = _tree(tmp_path) - before
    assert new and all((tmp_path / "out") in p.parents or p == tmp_path / "out" for p in new)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"one.jpg", "two.png", "one_1.jpg", "detections.json"}
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [Path(r["image"]).name for r in records] == ["one.jpg", "two.png", "one.jpg"]
    assert records[0]["width"] == 200 and records[0]["height"] == 100
    assert records[0]["detections"] == [{"class_id": 1, "class_name": "b", "score": pytest.approx(0.98670, abs=1e-4),
                                         "box": [100.0, 12.5, 200.0, 37.5]}]
    drawn = cv2.imread(str(tmp_path / "out" / "one.jpg"))
    assert drawn.shape == (100, 200, 3) and drawn.max() > 100  # the box was drawn on the black image


def test_run_detect_video(tiny_cfg, tmp_path):
    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 64))
    for i in range(5):
        w.write(np.full((64, 128, 3), 20 * i, np.uint8))
    w.release()
    summary = run_detect([video], model=tiny_cfg, runner=fake_runner, batch=2, save_dir=tmp_path / "out",
                         json_path="frames.json", progress=False)
    assert summary.processed == 5 and not summary.problems
    records = json.loads((tmp_path / "out" / "frames.json").read_text())
    assert [r["image"] for r in records] == [f"{video}#frame={i}" for i in range(5)]
    assert all(len(r["detections"]) == 1 for r in records)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    ok, frame = cap.read()
    assert ok and frame.shape == (64, 128, 3)
    cap.release()


def test_run_detect_nothing_processed(tiny_cfg, tmp_path):
    summary = run_detect([tmp_path / "missing.png"], model=tiny_cfg, runner=fake_runner, save_dir=tmp_path / "out",
                         progress=False)
    assert summary.processed == 0 and len(summary.problems) == 1


# ------------------------------------------------------------------ the CLI
@pytest.fixture
def tiny_weights(tiny_cfg, tmp_path) -> Path:
    from yolo4.darknet import load, save_weights

    torch.manual_seed(0)
    path = tmp_path / "tiny.weights"
    save_weights(load(tiny_cfg), path)
    return path


def test_cli_detect_exit_codes(tiny_cfg, tiny_weights, tmp_path, monkeypatch, capsys):
    from yolo4.cli import main

    monkeypatch.chdir(tmp_path)
    img = _write(tmp_path / "x.jpg", np.zeros((40, 50, 3), np.uint8))
    assert main(["detect", str(img), "--cfg", str(tiny_cfg)]) == 2
    err = capsys.readouterr().err
    assert "AlexeyAB/darknet/releases" in err and "yolo4 train" in err
    assert not (tmp_path / "runs").exists()  # nothing written for a refused run
    assert main(["detect", "nothing.jpg", "--cfg", str(tiny_cfg), "--weights", str(tiny_weights),
                 "--save-dir", "out"]) == 1
    assert main(["detect", str(img), "nothing.jpg", "--cfg", str(tiny_cfg), "--weights", str(tiny_weights),
                 "--save-dir", "out", "--nms", "diou", "--resize", "letterbox"]) == 0
    assert (tmp_path / "out" / "x.jpg").is_file() and (tmp_path / "out" / "detections.json").is_file()


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
    det = Detector(cfg, weights, names=names, img_size=320, resize="stretch", conf=0.25, iou=0.45)
    _assert_matches_table(det(images), table)


def test_pipeline_on_opencv_heads_matches_opencv_table(reference):
    """Pre-processing, decoding and NMS alone: the network step is OpenCV DNN's own conv outputs."""
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no darknet reader (needs opencv<5)")
    cfg, weights, names, images = _fastest(reference)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    head_convs = [n for n in net.getLayerNames() if n.startswith("conv_")
                  and f"yolo_{int(n[5:]) + 1}" in net.getLayerNames()]

    def opencv_runner(x: torch.Tensor) -> list[np.ndarray]:
        net.setInput(x.numpy())
        return list(net.forward(head_convs))

    det = Detector(cfg, names=names, img_size=320, resize="stretch", runner=opencv_runner)
    _assert_matches_table(det(images, batch_size=1), _reference_table(reference / "README.md"))


def test_run_detect_with_an_exported_onnx_file(tiny_cfg, tmp_path):
    """`--weights model.onnx` needs no --cfg: the same detections as the PyTorch module."""
    pytest.importorskip("onnxruntime")
    from yolo4.darknet import load
    from yolo4.export import ExportOptions, export_model

    torch.manual_seed(0)
    model = load(tiny_cfg)
    onnx_path = tmp_path / "tiny.onnx"
    export_model(model, ExportOptions(format="onnx", check=False), onnx_path, names=["a", "b"])
    img = _write(tmp_path / "x.png", np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    from_onnx = run_detect([img], weights=onnx_path, conf=0.0, save_dir=tmp_path / "o1", progress=False)
    from_torch = run_detect([img], model=model, names=["a", "b"], conf=0.0, save_dir=tmp_path / "o2", progress=False)
    assert from_onnx.processed == from_torch.processed == 1
    a, b = (json.loads((tmp_path / d / "detections.json").read_text())[0]["detections"] for d in ("o1", "o2"))
    assert len(a) == len(b) > 0
    for da, db in zip(a, b):
        assert da["class_name"] == db["class_name"] and da["score"] == pytest.approx(db["score"], abs=1e-4)
        assert da["box"] == pytest.approx(db["box"], abs=0.05)
