"""Bad input gives a clear ExportError before any file is written."""

from __future__ import annotations

import pytest

from yolo4.darknet import NetworkSpec, load
from yolo4.darknet.layers import Convolutional, NetOptions, YoloLayer
from yolo4.errors import ExportError
from yolo4.export import ExportOptions, export_model


def _mish_model():
    spec = NetworkSpec(
        NetOptions(width=64, height=64),
        [
            Convolutional(filters=8, size=3, stride=2, pad=1, batch_normalize=1, activation="mish"),
            Convolutional(filters=12, size=1, stride=1, pad=1, activation="linear"),
            YoloLayer(mask=[0, 1], anchors=[(10, 14), (23, 27)], classes=1, num=2),
        ],
    )
    return load(spec)


@pytest.mark.parametrize(
    "options, message",
    [
        (ExportOptions(format="pb"), "unknown export format 'pb'"),
        (ExportOptions(format="tflite", outputs="nms"), "--outputs nms is ONNX only"),
        (ExportOptions(format="tflite", dynamic_batch=True), "--dynamic-batch is ONNX only"),
        (ExportOptions(format="darknet", int8=True, calib="x"), "cannot be expressed"),
        (ExportOptions(int8=True), "--int8 needs calibration images"),
        (ExportOptions(batch=0), "--batch must be >= 1"),
        (ExportOptions(img_size=(100, 128)), "multiples of 32"),
        (ExportOptions(opset=13), "opset 17 or newer"),
    ],
)
def test_bad_options(tiny, tmp_path, options, message):
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=message):
        export_model(tiny, options, out)
    assert list(tmp_path.iterdir()) == []


def test_wrong_suffix(tiny, tmp_path):
    with pytest.raises(ExportError, match=r"writes a \.tflite file"):
        export_model(tiny, ExportOptions(format="tflite"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_calibration_folder_without_readable_images(tiny, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.jpg").write_bytes(b"not a jpeg")
    (calib / "notes.txt").write_text("hello")
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(ExportError, match=r"calib: none of its 1 image files can be read"):
        export_model(tiny, ExportOptions(int8=True, calib=str(calib)), out)
    assert not (tmp_path / "out").exists()


def test_calibration_folder_missing(tiny, tmp_path):
    with pytest.raises(ExportError, match="calibration data not found"):
        export_model(tiny, ExportOptions(int8=True, calib=str(tmp_path / "nope")), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_mish_cannot_be_expressed_below_opset_18(tmp_path):
    with pytest.raises(ExportError, match="uses Mish, which needs opset >= 18"):
        export_model(_mish_model(), ExportOptions(opset=17), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_run_export_needs_weights(tmp_path):
    from yolo4.export import run_export

    with pytest.raises(ExportError, match="no --weights"):
        run_export("yolov4-tiny", None, ExportOptions(out=str(tmp_path / "m.onnx")), verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_load_exported_rejects_foreign_files(tmp_path):
    from yolo4.export import load_exported

    with pytest.raises(ExportError, match="no such file"):
        load_exported(tmp_path / "missing.onnx")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ExportError, match="not an exported model"):
        load_exported(tmp_path / "m.pt")
