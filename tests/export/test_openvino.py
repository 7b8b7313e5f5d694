"""OpenVINO IR export (`--format openvino`) and its reader: float32 equals PyTorch on a second
input, int8 (NNCF) tracks float32, the metadata makes the .xml self-describing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolo4.errors import ExportError
from yolo4.export import ExportOptions, export_model, load_exported
from yolo4.inference.detector import Detector
from yolo4.ops.nms import DETECT_POSTPROCESS

pytest.importorskip("openvino")
pytest.importorskip("nncf")

INT8_MIN_CORR = 0.99  # int8 heads vs float32, Pearson correlation on a held-out input


def _calib_folder(tmp_path, make_images, hw=(128, 128), n=8):
    import cv2

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(make_images(n, hw, seed=21)):
        cv2.imwrite(str(calib / f"{i}.png"), (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    return calib


def test_openvino_float_matches_pytorch_and_reads_back(tiny, make_images, tmp_path):
    out = tmp_path / "tiny.xml"
    r = export_model(tiny, ExportOptions(format="openvino", outputs="decoded"), out, names=["a", "b", "c"])
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert r.report["max_abs_diff"] <= 1e-4
    net = load_exported(out)
    assert net.runtime == "openvino" and net.names == ["a", "b", "c"] and net.outputs == "decoded"
    assert net.input_hw == (128, 128)
    x = make_images(3, (128, 128), seed=9)  # batch 3 through a batch-1 file: chunked
    got = net(x)
    from yolo4.export.graph import build_graph

    with torch.no_grad():
        boxes, scores = build_graph(tiny, "decoded", (128, 128))(x)
    assert torch.allclose(got.boxes, boxes, atol=1e-3)
    assert torch.allclose(got.class_probs, scores, atol=1e-4)
    dets = Detector(net, postprocess=DETECT_POSTPROCESS.replace(conf=0.01), device="cpu")(
        np.zeros((100, 140, 3), np.uint8)
    )
    assert dets[0].image_hw == (100, 140)


def test_openvino_int8_tracks_float(tiny, make_images, tmp_path):
    out = tmp_path / "int8.xml"
    r = export_model(
        tiny, ExportOptions(format="openvino", int8=True, calib=str(_calib_folder(tmp_path, make_images))), out
    )
    assert r.report["quantization"]["tool"].startswith("nncf")
    x = make_images(2, (128, 128), seed=22)
    got = load_exported(out)(x)
    with torch.no_grad():
        ref = tiny(x)
    for g, r_ in zip(got, ref):
        assert np.corrcoef(g.numpy().ravel(), r_.numpy().ravel())[0, 1] > INT8_MIN_CORR


@pytest.mark.parametrize("tool", ["nncf", "onnxruntime"])
def test_onnx_int8_keep_float_leaves_layers_unquantised(tiny, make_images, tmp_path, tool):
    """--int8-keep-float 0 26: those layers' convolutions read float weights (no DequantizeLinear)."""
    import onnx

    calib = _calib_folder(tmp_path, make_images)
    out = tmp_path / f"{tool}.onnx"
    options = ExportOptions(int8=True, calib=str(calib), int8_tool=tool, int8_keep_float=(0, 26))
    r = export_model(tiny, options, out)
    assert r.report["quantization"]["float_layers"] == [0, 26]
    m = onnx.load(str(out))
    producers = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        weight_from = producers.get(n.input[1])
        quantised = weight_from is not None and weight_from.op_type == "DequantizeLinear"
        floats = n.name.startswith(("/model/blocks.0/", "/model/blocks.26/"))
        assert quantised != floats, n.name
    # an NNCF-quantised .onnx runs in OpenVINO by default (onnxruntime runs its QDQ layout ~2x slower)
    assert load_exported(out).runtime == ("openvino" if tool == "nncf" else "onnxruntime")
    assert load_exported(out, runtime="onnxruntime").runtime == "onnxruntime"
    with pytest.raises(ExportError, match="cannot run .onnx"):
        load_exported(out, runtime="tflite")


def test_keep_float_out_of_range_is_refused(tiny, make_images, tmp_path):
    calib = _calib_folder(tmp_path, make_images, n=2)
    with pytest.raises(ExportError, match="layers 0..37"):
        export_model(tiny, ExportOptions(int8=True, calib=str(calib), int8_keep_float=(99,)), tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="need --int8"):
        ExportOptions(int8_keep_float=(1,)).validate()
    with pytest.raises(ExportError, match="openvino"):
        ExportOptions(format="openvino", outputs="nms").validate()
