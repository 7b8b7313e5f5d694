"""TFLite export (litert-torch) run in the ai-edge-litert interpreter: float32 equals PyTorch
within 1e-3; full int8 has an int8 input, float32 outputs and the calibration recorded."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
pytest.importorskip("ai_edge_litert", reason="the 'tflite' extra (ai-edge-litert) is not installed")

from yolo4.export import ExportOptions, export_model, load_exported  # noqa: E402
from yolo4.export.tflite import HEAD_RANGE  # noqa: E402
from yolo4.inference.runtime import tflite_metadata as read_metadata  # noqa: E402


def test_float32_equals_pytorch(tiny, make_images, tmp_path):
    out = tmp_path / "tiny.tflite"
    r = export_model(tiny, ExportOptions(format="tflite"), out, names=["a", "b", "c"])
    assert r.report["max_abs_diff"] <= 1e-3
    net = load_exported(out)
    assert net.input["dtype"] == np.float32 and net.names == ["a", "b", "c"] and net.outputs == "heads"
    x = make_images(2, (128, 128), seed=3)  # batch 2 through a batch-1 file (chunked)
    got = net(x)
    with torch.no_grad():
        ref = tiny(x)
    assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref]
    assert max(float((g - r).abs().max()) for g, r in zip(got, ref)) <= 1e-3


@pytest.mark.slow
def test_float32_mish_network_is_decomposed(make_model, make_images, tmp_path):
    model = make_model("yolov4-csp", img_size=64)  # Mish: TFLite has no op for it
    out = tmp_path / "csp.tflite"
    r = export_model(model, ExportOptions(format="tflite"), out)
    assert r.report["max_abs_diff"] <= 1e-3


@pytest.mark.slow
def test_full_int8_has_int8_input_float_outputs(tiny, make_images, tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    out = tmp_path / "tiny-int8.tflite"
    export_model(tiny, ExportOptions(format="tflite", int8=True, calib=str(folder), calib_count=4), out)
    net = load_exported(out)
    assert net.input["dtype"] == np.int8
    scale, zero = net.input["quantization"]
    assert abs(scale - 1 / 255) < 2e-5 and zero == -128  # pixels / 255 map to int8 (almost) exactly
    assert all(d["dtype"] == np.float32 for d in net.output_details)
    quant = json.loads(read_metadata(out)["yolo4.quantization"])
    assert quant["calibration_images"] == 4 and "per output channel" in quant["weights"]
    # the heads' int8 range stays within [-HEAD_RANGE, HEAD_RANGE] (PT2E's own calibration is unbounded)
    heads = [d for d in net.interpreter.get_tensor_details() if d["name"].endswith("_int8")]
    assert len(heads) == 2
    for d in heads:
        scale, zero = d["quantization"]
        assert -HEAD_RANGE - scale <= (-128 - zero) * scale and (127 - zero) * scale <= HEAD_RANGE + scale
    x = make_images(1, (128, 128))
    got = net(x)
    with torch.no_grad():
        ref = tiny(x)
    for g, r in zip(got, ref):  # int8 is close to float, not equal
        err = float((g - r).abs().max())
        assert 0 < err < 0.25 * float(r.abs().max())


@pytest.mark.slow
def test_int8_decoded_keeps_decoding_float(tiny, make_images, tmp_path):
    from yolo4.ops.boxes import decode_heads

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(str(calib / f"{i}.png"), rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    out = tmp_path / "dec-int8.tflite"
    export_model(tiny, ExportOptions(format="tflite", outputs="decoded", int8=True, calib=str(calib)), out)
    net = load_exported(out)
    assert net.input["dtype"] == np.int8 and net.outputs == "decoded"
    x = make_images(1, (128, 128))
    got = net(x)
    with torch.no_grad():
        ref = decode_heads(tiny(x), tiny.yolo_layers, (128, 128))
    err = float((got.boxes - ref.boxes).abs().max())
    assert 0 < err < 4.0  # pixels: int8 network, float decoding (int8 decoding would be ~1 px steps everywhere)
