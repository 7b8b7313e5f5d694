"""ONNX export: numbers equal PyTorch's on an input other than the export input, for raw
heads, decoded outputs and NMS inside the graph, with static and dynamic batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from yolo4.errors import Yolo4Error  # noqa: E402
from yolo4.export import ExportOptions, export_model, load_exported  # noqa: E402
from yolo4.inference.runtime import onnx_metadata as read_metadata  # noqa: E402
from yolo4.inference.runtime import onnx_session as session
from yolo4.ops.boxes import decode_heads  # noqa: E402
from yolo4.ops.nms import PostprocessConfig, postprocess  # noqa: E402


def _run(path, x: torch.Tensor) -> list[np.ndarray]:
    return session(path).run(None, {"images": x.numpy()})


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_tiny_heads_equal_pytorch(tiny, make_images, tmp_path, dynamic):
    out = tmp_path / "tiny.onnx"
    r = export_model(tiny, ExportOptions(dynamic_batch=dynamic, batch=1), out)
    assert r.paths == [out] and out.is_file()
    assert r.report["max_abs_diff"] <= 1e-4  # the exporter's own check ran on a fresh input
    batch = 3 if dynamic else 1  # a dynamic model must take a batch it was not traced with
    x = make_images(batch, (128, 128))
    got = _run(out, x)
    with torch.no_grad():
        ref = tiny(x)
    assert len(got) == len(ref) == 2
    for g, r_ in zip(got, ref):
        assert g.shape == tuple(r_.shape)
        assert np.abs(g - r_.numpy()).max() <= 1e-4
        assert r_.numpy().std() > 1e-2  # non-trivial values were compared


@pytest.fixture(scope="module")
def csp(make_model):
    return make_model("yolov4-csp-leaky", img_size=64)


@pytest.mark.parametrize("dynamic", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["static", "dynamic"])
def test_csp_leaky_heads_equal_pytorch(csp, make_images, tmp_path, dynamic):
    out = tmp_path / "csp.onnx"
    export_model(csp, ExportOptions(dynamic_batch=dynamic, check=False), out)  # compared here instead
    x = make_images(2 if dynamic else 1, (64, 64), seed=9)
    got = _run(out, x)
    with torch.no_grad():
        ref = csp(x)
    assert [g.shape for g in got] == [tuple(r.shape) for r in ref]
    assert max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref)) <= 1e-4


def test_static_batch_file_runs_any_batch_in_chunks(tiny, make_images, tmp_path):
    out = tmp_path / "b2.onnx"
    export_model(tiny, ExportOptions(batch=2), out)
    net = load_exported(out)
    assert net.static_batch == 2
    x = make_images(3, (128, 128))  # 3 images through a batch-2 file: chunked and padded
    got = net(x)
    with torch.no_grad():
        ref = tiny(x)
    for g, r in zip(got, ref):
        assert torch.allclose(g, r, atol=1e-4)


def test_decoded_outputs_equal_decode_heads(tiny, make_images, tmp_path):
    out = tmp_path / "dec.onnx"
    export_model(tiny, ExportOptions(outputs="decoded", dynamic_batch=True), out)
    x = make_images(2, (128, 128))
    boxes, scores = _run(out, x)
    with torch.no_grad():
        dec = decode_heads(tiny(x), tiny.yolo_layers, (128, 128))
    n = dec.boxes.shape[1]
    assert boxes.shape == (2, n, 4) and scores.shape == (2, n, 3)
    assert np.abs(boxes - dec.boxes.numpy()).max() <= 1e-3  # pixels, up to ~128
    assert np.abs(scores - (dec.objectness[..., None] * dec.class_probs).numpy()).max() <= 1e-5


@pytest.mark.parametrize("labels", ["best", "all"])
def test_nms_in_graph_equals_pytorch_postprocess(tiny, make_images, tmp_path, labels):
    settings = PostprocessConfig(conf=0.2, iou=0.45, labels=labels, max_det=10_000)
    out = tmp_path / "nms.onnx"
    export_model(tiny, ExportOptions(outputs="nms", dynamic_batch=True, postprocess=settings), out)
    net = load_exported(out)
    assert net.outputs == "nms" and json.loads(read_metadata(out)["yolo4.nms"])["labels"] == labels
    x = make_images(2, (128, 128), seed=11)
    got = net.detections(x)
    with torch.no_grad():
        dec = decode_heads(tiny(x), tiny.yolo_layers, (128, 128))
    ref = postprocess(*dec, settings)
    total = 0
    for (gb, gs, gc), r in zip(got, ref):
        assert len(gs) == len(r.scores)
        total += len(gs)
        # same detections; order by (score, class) to be robust to equal scores
        go = np.lexsort((gc.numpy(), -gs.numpy()))
        ro = np.lexsort((r.class_ids.numpy(), -r.scores.numpy()))
        np.testing.assert_array_equal(gc.numpy()[go], r.class_ids.numpy()[ro])
        np.testing.assert_allclose(gs.numpy()[go], r.scores.numpy()[ro], atol=1e-5)
        np.testing.assert_allclose(gb.numpy()[go], r.boxes.numpy()[ro], atol=1e-3)
    assert total >= 10  # enough detections for the comparison to mean something


def test_metadata_round_trip(tiny, tmp_path):
    out = tmp_path / "meta.onnx"
    export_model(tiny, ExportOptions(img_size=(96, 160)), out, names=["a", "b", "c"])
    net = load_exported(out)
    assert net.names == ["a", "b", "c"]
    assert net.input_hw == (96, 160)
    assert [y.head_anchors for y in net.yolo_layers] == [y.head_anchors for y in tiny.yolo_layers]
    pre = net.preprocess
    assert pre["resize"] == "stretch" and pre["input_hw"] == [96, 160] and pre["color"] == "RGB"
    assert net.quantization == "none"
    assert session(out).get_inputs()[0].shape == [1, 3, 96, 160]


def test_mish_network_exports_at_opset_18(make_images, tmp_path):
    import onnx

    from yolo4.darknet import NetworkSpec, load
    from yolo4.darknet.layers import Convolutional, NetOptions, YoloLayer

    spec = NetworkSpec(
        NetOptions(width=64, height=64),
        [
            Convolutional(filters=8, size=3, stride=2, pad=1, batch_normalize=1, activation="mish"),
            Convolutional(filters=2 * 6, size=1, stride=1, pad=1, activation="linear"),
            YoloLayer(mask=[0, 1], anchors=[(10, 14), (23, 27)], classes=1, num=2),
        ],
    )
    model = load(spec)
    out = tmp_path / "mish.onnx"
    r = export_model(model, ExportOptions(), out)
    assert r.report["opset"] == 18
    assert onnx.load(str(out)).opset_import[0].version == 18
    x = make_images(1, (64, 64))
    with torch.no_grad():
        ref = model(x)[0].numpy()
    assert np.abs(_run(out, x)[0] - ref).max() <= 1e-4


def test_int8_onnx_tracks_float(tiny, make_images, tmp_path):
    """QDQ int8 heads stay close to float32. Darknet's -inf max-pool padding (yolov4-tiny has
    it) gets no int8 scale; with it the int8 model collapsed (head correlation ~0.5)."""
    import cv2

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(make_images(6, (128, 128), seed=21)):
        cv2.imwrite(str(calib / f"{i}.png"), (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    out = tmp_path / "int8.onnx"
    r = export_model(tiny, ExportOptions(int8=True, calib=str(calib)), out)
    q = r.report["quantization"]
    assert q["calibration_images"] == 6
    if q["tool"].startswith("nncf"):
        # NNCF's overflow fix on every convolution: 7-bit weights, which CPUs without VNNI do not
        # saturate (OpenVINO's kernels there lost 8 dB of heads' SQNR with 8-bit weights)
        import onnx

        weights = _int8_conv_weights(out)
        convs = sum(n.op_type == "Conv" for n in onnx.load(str(out)).graph.node)
        assert q["weights_7bit"] and len(weights) == convs and max(int(np.abs(w).max()) for w in weights) <= 64
    x = make_images(2, (128, 128), seed=22)
    got = load_exported(out)(x)
    with torch.no_grad():
        ref = tiny(x)
    for g, r_ in zip(got, ref):
        assert np.corrcoef(g.numpy().ravel(), r_.numpy().ravel())[0, 1] > 0.99


def _int8_conv_weights(path) -> list[np.ndarray]:
    """The int8 kernels (4-D int8 initializers) of a QDQ file, one per quantised Conv."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    ints = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return [w.astype(np.int32) for w in ints if w.ndim == 4]


@pytest.mark.parametrize("tool", ["nncf", "onnxruntime"])
def test_int8_weights_take_7_bits_unless_8_are_asked_for(tool, small_cfg_text, make_images, tmp_path):
    """7 bits by default, which CPUs without VNNI multiply without saturating (their int8
    kernels add u8 x s8 pairs in 16 bits); 8 (the whole range) on request; the metadata says which."""
    if tool == "nncf":
        pytest.importorskip("nncf")
    import cv2

    import yolo4.darknet as dn

    torch.manual_seed(0)
    model = dn.Darknet(dn.parse_cfg(small_cfg_text, "small.cfg")).eval()
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(make_images(4, (64, 64), seed=3)):
        cv2.imwrite(str(calib / f"{i}.png"), (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    for bits, largest in ((7, 64), (8, 127)):
        out = tmp_path / f"int8-{bits}.onnx"
        options = ExportOptions(int8=True, calib=str(calib), int8_tool=tool, int8_weight_bits=bits)
        q = export_model(model, options, out).report["quantization"]
        assert q["weights_7bit"] is (bits == 7) and ("7-bit range" in q["weights"]) is (bits == 7)
        weights = _int8_conv_weights(out)
        assert weights and max(int(np.abs(w).max()) for w in weights) == largest, (tool, bits)
        assert json.loads(read_metadata(out)["yolo4.quantization"])["weights_7bit"] is (bits == 7)
    with pytest.raises(Yolo4Error, match="--int8-weight-bits must be 7 or 8, got 6"):
        export_model(model, ExportOptions(int8=True, calib=str(calib), int8_weight_bits=6), tmp_path / "x.onnx")
