"""yolo4.inference.detect: the `yolo4 detect` run over images, folders, videos, and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo4.inference.detect import run_detect
from yolo4.ops.nms import DETECT_POSTPROCESS

ANY_SCORE = DETECT_POSTPROCESS.replace(conf=0.0)


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------ the detect run
def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_run_detect_images_bad_inputs_and_nothing_outside_save_dir(
    tiny_cfg, fake_runner, tmp_path, monkeypatch, capsys
):
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
    summary = run_detect(
        [str(src), str(tmp_path / "empty"), "missing.jpg", str(tmp_path / "broken.avi"), str(other / "one.jpg")],
        model=tiny_cfg,
        names=["a", "b"],
        runner=fake_runner,
        batch=2,
        out=tmp_path / "out",
        progress=False,
    )
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
    assert records[0]["detections"] == [
        {"class_id": 1, "class_name": "b", "score": pytest.approx(0.98670, abs=1e-4), "box": [100.0, 12.5, 200.0, 37.5]}
    ]
    drawn = cv2.imread(str(tmp_path / "out" / "one.jpg"))
    assert drawn.shape == (100, 200, 3) and drawn.max() > 100  # the box was drawn on the black image


def test_run_detect_video(tiny_cfg, fake_runner, tmp_path):
    video = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 64))
    for i in range(5):
        w.write(np.full((64, 128, 3), 20 * i, np.uint8))
    w.release()
    summary = run_detect(
        [video],
        model=tiny_cfg,
        runner=fake_runner,
        batch=2,
        out=tmp_path / "out",
        json_path="frames.json",
        progress=False,
    )
    assert summary.processed == 5 and not summary.problems
    records = json.loads((tmp_path / "out" / "frames.json").read_text())
    assert [r["image"] for r in records] == [f"{video}#frame={i}" for i in range(5)]
    assert all(len(r["detections"]) == 1 for r in records)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    ok, frame = cap.read()
    assert ok and frame.shape == (64, 128, 3)
    cap.release()


def test_damaged_videos_are_named(tiny_cfg, fake_runner, tmp_path):
    """A truncated video: the frames it holds are processed and the shortfall is named; a
    video that cannot be opened (its index cut off, or not a video) is named and skipped."""
    avi = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        w.write(np.full((48, 64, 3), 8 * i, np.uint8))
    w.release()
    data = avi.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    mp4 = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), 8 * i, np.uint8))
    w.release()
    (tmp_path / "cut.mp4").write_bytes(mp4.read_bytes()[:200])
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    sources = [tmp_path / n for n in ("clip.avi", "cut.avi", "cut.mp4", "text.mp4")]
    summary = run_detect(sources, model=tiny_cfg, runner=fake_runner, out=tmp_path / "out", progress=False)
    text = "\n".join(summary.problems)
    assert len(summary.problems) == 3, text
    assert "cut.avi: ended after" in text and "of the 30 frames its header announces" in text
    assert "cut.mp4: cannot open video" in text and "text.mp4: cannot open video" in text
    assert 30 < summary.processed < 60  # the whole clip, and what the cut copy holds


def test_run_detect_nothing_processed(tiny_cfg, fake_runner, tmp_path):
    summary = run_detect(
        [tmp_path / "missing.png"], model=tiny_cfg, runner=fake_runner, out=tmp_path / "out", progress=False
    )
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
    assert main(["detect", str(img), "--model", str(tiny_cfg)]) == 2
    err = capsys.readouterr().err
    assert "AlexeyAB/darknet/releases" in err and "yolo4 train" in err
    assert not (tmp_path / "runs").exists()  # nothing written for a refused run
    assert (
        main(["detect", "nothing.jpg", "--model", str(tiny_cfg), "--weights", str(tiny_weights), "--out", "out"]) == 1
    )
    assert (
        main(
            [
                "detect",
                str(img),
                "nothing.jpg",
                "--model",
                str(tiny_cfg),
                "--weights",
                str(tiny_weights),
                "--out",
                "out",
                "--nms",
                "diou",
                "--resize",
                "letterbox",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / "x.jpg").is_file() and (tmp_path / "out" / "detections.json").is_file()
    out = capsys.readouterr().out
    assert "1 images/frames" in out and "ms (fp32, BN folded, channels_last, eager)" in out  # how it ran


def test_cli_names_a_checkpoint_a_folder_or_a_bad_names_file_given_for_weights(
    tiny_cfg, tiny_weights, tmp_path, capsys
):
    """What a new user passes by mistake: best.pt or the run folder as --weights, a binary file
    as --names. Exit code 2 and one line naming the file, never a traceback."""
    import torch

    from yolo4.cli import main

    img = _write(tmp_path / "x.jpg", np.zeros((40, 50, 3), np.uint8))
    torch.save({"model": {}}, tmp_path / "best.pt")
    (tmp_path / "run").mkdir()
    for weights, message in [
        (tmp_path / "best.pt", "best.pt: not darknet weights but a zip archive, as PyTorch writes .pt checkpoints"),
        (tmp_path / "run", "run: is a folder; --weights wants a darknet .weights file"),
    ]:
        assert (
            main(
                ["detect", str(img), "--model", str(tiny_cfg), "--weights", str(weights), "--out", str(tmp_path / "o")]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    code = main(
        ["detect", str(img), "--model", str(tiny_cfg), "--weights", str(tiny_weights), "--names", str(tiny_weights)]
    )
    assert code == 2 and "not a text file of class names" in capsys.readouterr().err


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
    from_onnx = run_detect([img], weights=onnx_path, postprocess=ANY_SCORE, out=tmp_path / "o1", progress=False)
    from_torch = run_detect(
        [img], model=model, names=["a", "b"], postprocess=ANY_SCORE, out=tmp_path / "o2", progress=False
    )
    assert from_onnx.processed == from_torch.processed == 1
    a, b = (json.loads((tmp_path / d / "detections.json").read_text())[0]["detections"] for d in ("o1", "o2"))
    assert len(a) == len(b) > 0
    for da, db in zip(a, b):
        assert da["class_name"] == db["class_name"] and da["score"] == pytest.approx(db["score"], abs=1e-4)
        assert da["box"] == pytest.approx(db["box"], abs=0.05)
