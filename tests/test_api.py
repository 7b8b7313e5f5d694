"""yolo4.api and the top-level names: `import yolo4` stays light, every public name resolves to
the library's own object, and each function does its command's job on a small model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import yolo4
from yolo4.errors import ExportError, Yolo4Error


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A 3-class yolov4-tiny at 128 px with seeded random weights, as darknet .cfg + .weights."""
    from yolo4.darknet import save_weights, write_cfg
    from yolo4.models import load_model

    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = load_model("yolov4-tiny", num_classes=3, img_size=128)
    cfg, weights = folder / "tiny.cfg", folder / "tiny.weights"
    write_cfg(model.spec, cfg)
    save_weights(model, weights)
    return cfg, weights


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_yolo4_stays_light():
    """The API is imported on first use: `import yolo4` needs no torch, and importing a
    subpackage does not pull in the API (which imports every layer)."""
    code = (
        "import sys, yolo4; a = 'torch' in sys.modules; import yolo4.darknet; b = 'yolo4.api' in sys.modules; "
        "yolo4.load; print(a, b, 'yolo4.api' in sys.modules, yolo4.__version__)"
    )
    assert _run(code) == f"False False True {yolo4.__version__}"


def test_public_names_are_the_library_objects():
    from yolo4.inference.detect import run_detect
    from yolo4.inference.detector import Detections, Detector
    from yolo4.ops.nms import DETECT_POSTPROCESS, VAL_POSTPROCESS, PostprocessConfig
    from yolo4.training.config import TrainConfig

    assert yolo4.Detector is Detector and yolo4.Detections is Detections
    assert yolo4.PostprocessConfig is PostprocessConfig and yolo4.TrainConfig is TrainConfig
    assert yolo4.DETECT_POSTPROCESS is DETECT_POSTPROCESS and yolo4.VAL_POSTPROCESS is VAL_POSTPROCESS
    assert yolo4.detect is run_detect and yolo4.api.load is yolo4.load
    from yolo4.inference.cluster import RayConfig, detect_dataset
    from yolo4.inference.tiles import TileConfig
    from yolo4.inference.track import TrackConfig, run_track

    assert yolo4.detect_dataset is detect_dataset and yolo4.track is run_track
    assert (yolo4.TileConfig, yolo4.TrackConfig, yolo4.RayConfig) == (TileConfig, TrackConfig, RayConfig)
    from yolo4.inference.speed import EAGER, FAST_CPU, SpeedConfig

    assert (yolo4.SpeedConfig, yolo4.FAST_CPU, yolo4.EAGER) == (SpeedConfig, FAST_CPU, EAGER)
    for name in yolo4.__all__:
        assert getattr(yolo4, name) is not None, name
    assert set(yolo4.__all__) <= set(dir(yolo4))
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        yolo4.lod  # noqa: B018


def test_yolo4_export_is_the_package_and_the_function():
    """A subpackage named `export` would replace a function of that name once imported, so the
    package itself is callable."""
    import yolo4.export
    import yolo4.export.onnx  # noqa: F401  (importing submodules does not unbind it)
    from yolo4.export import ExportOptions
    from yolo4.export.run import run_export

    assert callable(yolo4.export) and yolo4.export is sys.modules["yolo4.export"]
    assert yolo4.api.export is run_export and yolo4.export.ExportOptions is ExportOptions


def test_load_detects_with_image_shaped_results(tiny_files):
    cfg, weights = tiny_files
    detector = yolo4.load(cfg, weights, postprocess=yolo4.DETECT_POSTPROCESS.replace(conf=0.0, max_det=7))
    assert isinstance(detector, yolo4.Detector) and detector.device.type in ("cpu", "cuda")
    images = [np.zeros((90, 160, 3), np.uint8), np.full((200, 100, 3), 128, np.uint8)]
    results = detector(images)
    for r, img in zip(results, images):
        assert isinstance(r, yolo4.Detections) and len(r) == 7  # conf 0: max_det caps
        assert r.boxes.shape == (7, 4) and r.boxes.dtype == np.float32 and r.class_ids.dtype == np.int64
        assert r.image_hw == img.shape[:2] and (r.boxes[:, 2] <= img.shape[1] + 1e-3).all()
        assert r.labels[0] in ("0", "1", "2")
    plain = yolo4.load(cfg, weights, device="cpu", speed=yolo4.EAGER)  # `--eager`
    assert plain.speed == yolo4.EAGER and yolo4.load(cfg, weights, device="cpu").speed == yolo4.FAST_CPU


def test_load_without_weights_says_where_to_get_them(tiny_files):
    from yolo4.errors import WeightsError

    with pytest.raises(WeightsError, match="AlexeyAB/darknet/releases"):
        yolo4.load(tiny_files[0])


def test_load_an_exported_file_gives_the_pytorch_detections(tiny_files, tmp_path):
    pytest.importorskip("onnxruntime")
    cfg, weights = tiny_files
    result = yolo4.export(cfg, weights, format="onnx", outputs="decoded", out=str(tmp_path / "m.onnx"), verbose=False)
    assert isinstance(result, yolo4.ExportResult) and result.options.outputs == "decoded"
    any_score = yolo4.DETECT_POSTPROCESS.replace(conf=0.0, max_det=20)
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), np.uint8)
    [a] = yolo4.load(tmp_path / "m.onnx", postprocess=any_score, device="cpu")(image)
    [b] = yolo4.load(cfg, weights, postprocess=any_score, device="cpu")(image)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
    # info and benchmark take the same model names
    info = yolo4.info(tmp_path / "m.onnx", file=open(tmp_path / "info.txt", "w"))  # noqa: SIM115
    assert info.input_chw == (3, 128, 128) and info.num_classes == 3
    bench = yolo4.benchmark(str(tmp_path / "m.onnx"), iters=1, warmup=0)
    assert bench.device == "cpu (onnxruntime)" and bench.network_ms > 0 and bench.input_hw == (128, 128)
    with pytest.raises(Yolo4Error, match="exported at 128x128, not --img-size 256"):
        yolo4.info(tmp_path / "m.onnx", img_size=256)
    with pytest.raises(ExportError, match="already exported"):
        yolo4.export(tmp_path / "m.onnx", weights)


def test_export_takes_options_or_their_fields(tiny_files, tmp_path):
    cfg, weights = tiny_files
    r = yolo4.export(cfg, weights, format="darknet", img_size=160, out=str(tmp_path / "d.cfg"), verbose=False)
    assert r.options.img_size == (160, 160) and [p.name for p in r.paths] == ["d.cfg", "d.weights"]
    base = yolo4.ExportOptions(format="darknet", out=str(tmp_path / "e.cfg"))
    r = yolo4.export(cfg, weights, base, img_size=(96, 128), verbose=False)
    assert r.options.img_size == (96, 128) and r.options.out == str(tmp_path / "e.cfg")
    with pytest.raises(ExportError, match="unknown export setting decode"):
        yolo4.export(cfg, weights, decode=True)
    with pytest.raises(ExportError, match="--nms diou cannot be exported"):
        yolo4.export(cfg, weights, outputs="nms", postprocess=yolo4.DETECT_POSTPROCESS.replace(nms="diou"))


def test_val_scores_each_model_and_returns_metrics(tiny_files, tmp_path, capsys):
    from yolo4.data.shapes import SHAPES_NAMES, ShapesConfig, make_shapes

    cfg, weights = tiny_files
    data = make_shapes(
        tmp_path / "shapes",
        ShapesConfig(num_train=2, num_val=3, img_size=128, classes=SHAPES_NAMES[:3], size_range=(16.0, 64.0)),
        progress=False,
    )
    metrics = yolo4.val(data, model=cfg, weights=[weights, weights], out=tmp_path / "v", progress=False)
    assert len(metrics) == 2 and metrics[0].map50 == metrics[1].map50 and metrics[0].num_predictions > 0
    assert "conf 0.001, NMS greedy 0.6, labels all, max_det 300" in capsys.readouterr().out
    assert (tmp_path / "v" / weights.name / "per_class.txt").is_file()


def test_train_refuses_what_it_would_ignore_or_not_know():
    with pytest.raises(Yolo4Error, match="unknown training setting learning_rate"):
        yolo4.train("data.yaml", learning_rate=0.1)
    with pytest.raises(Yolo4Error, match=r"would ignore --data, --epochs"):
        yolo4.train("data.yaml", demo=True, epochs=3)
    with pytest.raises(Yolo4Error, match="give --data"):
        yolo4.train()


def test_train_runs_from_keywords(tmp_path):
    """One epoch on four images: the keywords reach TrainConfig and a TrainResult comes back."""
    from yolo4.data.shapes import SHAPES_NAMES, ShapesConfig, make_shapes

    data = make_shapes(
        tmp_path / "shapes",
        ShapesConfig(num_train=4, num_val=2, img_size=64, classes=SHAPES_NAMES[:2], size_range=(12.0, 32.0)),
        progress=False,
    )
    result = yolo4.train(
        data,
        model="yolov3-tiny",
        epochs=1,
        batch=4,
        img_size=64,
        workers=0,
        device="cpu",
        out=tmp_path / "run",
        options=["mosaic=0", "burn_in=1", "precise_bn_batches=0", "progress=0", "amp=0"],
    )
    assert isinstance(result, yolo4.TrainResult) and result.epochs == 1 and result.out_dir == tmp_path / "run"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == "yolov3-tiny" and config["mosaic"] == 0 and config["out"] == str(tmp_path / "run")
