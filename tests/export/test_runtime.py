"""Exported files run behind the Detector with the same pre/post-processing as PyTorch,
and `yolo4 export` wires the library."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from yolo4.cli import main  # noqa: E402
from yolo4.darknet import load, save_weights  # noqa: E402
from yolo4.data.sources import load_image  # noqa: E402
from yolo4.evaluation.metrics import coco_evaluate  # noqa: E402
from yolo4.export import ExportOptions, export_model, load_exported  # noqa: E402
from yolo4.inference.detector import Detector  # noqa: E402
from yolo4.ops.nms import DETECT_POSTPROCESS  # noqa: E402


@pytest.fixture(scope="module")
def fastest(reference):
    models = reference / "models"
    model = load(models / "yolo-fastest-1.1.cfg", models / "yolo-fastest-1.1.weights")
    images = [load_image(p) for p in sorted((reference / "images").glob("*.jpg"))]
    return model, images


def _dets(det: Detector, images):
    return [(r.boxes, r.scores, r.class_ids) for r in det.predict_batch(images)]


@pytest.mark.parametrize("outputs", ["heads", "decoded"])
def test_onnx_fp32_detections_equal_pytorch_on_real_model(fastest, tmp_path, outputs):
    model, images = fastest
    out = tmp_path / "fastest.onnx"
    export_model(model, ExportOptions(outputs=outputs), out)
    ref = _dets(Detector(model, device="cpu"), images)
    got = _dets(Detector(load_exported(out), device="cpu"), images)
    assert sum(len(r[1]) for r in ref) >= 10  # the reference table has 15 detections
    for (gb, gs, gc), (rb, rs, rc) in zip(got, ref):
        np.testing.assert_array_equal(gc, rc)
        np.testing.assert_allclose(gs, rs, atol=1e-4)
        np.testing.assert_allclose(gb, rb, atol=0.05)


@pytest.mark.slow
def test_onnx_int8_agrees_with_fp32_on_real_model(fastest, reference, tmp_path):
    model, images = fastest
    out = tmp_path / "fastest-int8.onnx"
    r = export_model(model, ExportOptions(int8=True, calib=str(reference / "images")), out)
    quant = r.report["quantization"]
    assert quant["calibration_images"] == 3 and quant["format"] == "QDQ"
    net = load_exported(out)
    assert net.quantization["weights"] == "int8 symmetric, per output channel"
    truth = [(b, c) for b, _, c in _dets(Detector(model), images)]
    preds = _dets(Detector(net, postprocess=DETECT_POSTPROCESS.replace(conf=0.001)), images)
    m = coco_evaluate(truth, preds, [str(i) for i in range(80)])
    assert m.map50 >= 0.9  # int8 finds what fp32 finds (measured: 1.0)


def test_cli_export_onnx_and_darknet(tiny, make_images, tmp_path, capsys):
    weights = tmp_path / "tiny3.weights"
    save_weights(tiny, weights)
    rc = main(
        [
            "export",
            "--model",
            "yolov4-tiny",
            "--classes",
            "3",
            "--weights",
            str(weights),
            "--img-size",
            "128",
            "--outputs",
            "decoded",
            "--dynamic-batch",
        ]
    )
    assert rc == 0
    out = tmp_path / "tiny3-128x128-decoded.onnx"
    assert out.is_file() and "wrote" in capsys.readouterr().out
    net = load_exported(out)
    assert net.outputs == "decoded" and net.static_batch is None
    x = make_images(2, (128, 128))
    dec = net(x)  # a batch of 2 through a file traced with 1
    n = 3 * (4 * 4 + 8 * 8)  # 3 anchors on the stride-32 and stride-16 grids of a 128 input
    assert dec.boxes.shape == (2, n, 4) and dec.class_probs.shape == (2, n, 3)
    assert torch.all(dec.objectness == 1)
    rc = main(
        [
            "export",
            "--model",
            "yolov4-tiny",
            "--classes",
            "3",
            "--weights",
            str(weights),
            "--format",
            "darknet",
            "--out",
            str(tmp_path / "d" / "m.cfg"),
        ]
    )
    assert rc == 0 and (tmp_path / "d" / "m.weights").stat().st_size == weights.stat().st_size


def test_cli_bad_format_is_a_clear_error(tiny, tmp_path, capsys):
    weights = tmp_path / "tiny3.weights"
    save_weights(tiny, weights)
    with pytest.raises(SystemExit) as stop:
        main(["export", "--model", "yolov4-tiny", "--classes", "3", "--weights", str(weights), "--format", "coreml"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'coreml'" in err and "tflite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny3.weights"]


def test_nms_model_refuses_forward_but_gives_detections(tiny, make_images, tmp_path):
    out = tmp_path / "nms.onnx"
    export_model(tiny, ExportOptions(outputs="nms", postprocess=DETECT_POSTPROCESS.replace(conf=0.2)), out)
    net = load_exported(out)
    from yolo4.errors import ExportError

    with pytest.raises(ExportError, match="NMS inside its graph"):
        net(make_images(1, (128, 128)))
    dets = net.detections(make_images(1, (128, 128)))
    assert len(dets) == 1 and dets[0][0].shape[1] == 4
    assert json.loads(net.meta["yolo4.nms"]) == {
        "conf": 0.2,
        "iou": 0.45,
        "nms": "greedy",
        "labels": "best",
        "max_det": 300,
    }
    assert torch.all(dets[0][1][:-1] >= dets[0][1][1:])  # sorted by decreasing score


def test_detect_and_val_take_model_file(tiny, tmp_path, capsys):
    """`yolo4 detect --model FILE.onnx` and `yolo4 val --model FILE.onnx`: cfg, names and
    input size come from the file; val scores the exported model like the PyTorch one."""
    from yolo4.data.shapes import SHAPES_NAMES, ShapesConfig, make_shapes
    from yolo4.evaluation.evaluate import run_val

    classes = SHAPES_NAMES[:3]
    data = tmp_path / "shapes"
    make_shapes(
        data, ShapesConfig(num_train=2, num_val=4, img_size=128, classes=classes, size_range=(10.0, 64.0)), workers=1
    )
    onnx_path = tmp_path / "tiny.onnx"
    export_model(tiny, ExportOptions(check=False), onnx_path, names=list(classes))
    image = next((data / "images" / "val").glob("*.jpg"))
    assert main(["detect", str(image), "--model", str(onnx_path), "--conf", "0.1", "--out", str(tmp_path / "det")]) == 0
    records = json.loads((tmp_path / "det" / "detections.json").read_text())
    assert records and all(d["class_name"] in classes for d in records[0]["detections"])
    [m_onnx] = run_val(data, model=str(onnx_path), out=None, progress=False)
    cfg, weights = tmp_path / "tiny.cfg", tmp_path / "tiny.weights"
    export_model(tiny, ExportOptions(format="darknet"), cfg)
    [m_torch] = run_val(data, model=str(cfg), weights=weights, out=None, progress=False)
    assert m_onnx.num_predictions == m_torch.num_predictions > 0
    assert m_onnx.map50 == pytest.approx(m_torch.map50, abs=1e-6)
    capsys.readouterr()
