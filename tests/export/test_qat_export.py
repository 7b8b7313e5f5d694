"""yolo4.export.qat (named so beside tests/training/test_qat.py): a QAT network of a depthwise model
(yolo-fastest's building block) exports to an int8 ONNX that onnxruntime runs and that computes
what the fake-quantised PyTorch model does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# a depthwise 3x3 conv (8 groups of 1 channel) and a linear pointwise conv: NNCF's CPU setup would
# quantise the input of each depthwise conv per channel, the pointwise conv's output among them
DEPTHWISE = """[convolutional]
groups=8
filters=8
size=3
stride=1
pad=1
batch_normalize=1
activation=leaky
"""
POINTWISE = """[convolutional]
filters=8
size=1
stride=1
pad=0
batch_normalize=1
activation=linear
"""


def depthwise_cfg(small_cfg_text: str) -> str:
    """The small test network (conv 3x3 -> [yolo] head) with depthwise -> pointwise -> depthwise
    between its conv and its head (yolo-fastest's building block)."""
    head = small_cfg_text.index("[convolutional]\nfilters=21")
    return small_cfg_text[:head] + DEPTHWISE + POINTWISE + DEPTHWISE + small_cfg_text[head:]


QAT_ONNX_ATOL = 0.05  # yolo4.export.qat.QAT_CHECK_ATOL: int8 kernels vs fake-quant, relative to max(1, |out|)


@pytest.fixture(scope="module")
def depthwise_qat(small_cfg_text, make_images, with_realistic_bn):
    """The small depthwise network with realistic BN statistics, prepared for QAT (calibrated)."""
    pytest.importorskip("nncf")
    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export.qat import prepare_qat

    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(depthwise_cfg(small_cfg_text))))
    return prepare_qat(net.eval(), make_images(8, (64, 64))).eval()


def test_activation_quantisers_are_per_tensor(depthwise_qat):
    """onnxruntime's QLinearConv takes one output zero point: an activation quantiser per channel
    (what NNCF places before a depthwise conv by default) cannot be exported as int8 for it."""
    from nncf.torch.quantization.layers import BaseQuantizer

    quantisers = {n: m for n, m in depthwise_qat.named_modules() if isinstance(m, BaseQuantizer)}
    weights = [m for n, m in quantisers.items() if "pre_hooks" in n]
    activations = [m for n, m in quantisers.items() if "post_hooks" in n]
    assert len(weights) == 5 and len(activations) >= 4  # (5 convs; the input and each activation)
    assert all(m.per_channel for m in weights)  # one scale per output channel of each conv
    assert not any(m.per_channel for m in activations)


def test_depthwise_qat_model_exports_an_int8_onnx_that_onnxruntime_runs(depthwise_qat, make_images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from yolo4.export import ExportOptions, export_model

    result = export_model(depthwise_qat, ExportOptions(format="onnx", img_size=(64, 64)), tmp_path / "dw.onnx", ["a"])
    path = result.paths[0]
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 5
    # onnxruntime (its QLinearConv kernels: the graph optimiser fuses the QDQ pairs) against the
    # fake-quantised PyTorch model, on an input the export did not use
    x = make_images(1, (64, 64), seed=3)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = [r.numpy() for r in depthwise_qat(x)]
    assert len(got) == len(ref) == 1
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert np.abs(g - r).max() / max(1.0, float(np.abs(r).max())) <= QAT_ONNX_ATOL
    assert result.report["int8_max_abs_diff"] <= QAT_ONNX_ATOL


def _qdq_graph(qat_model, hw):
    from yolo4.export.graph import build_graph
    from yolo4.export.qat import use_qdq_export

    graph = build_graph(qat_model, "heads", hw)
    use_qdq_export(graph)
    return graph


def test_one_step_flips_past_the_max_difference_pass_on_sqnr(depthwise_qat, make_images, tmp_path, monkeypatch):
    """With the max-difference test made impossible (QAT_CHECK_ATOL 0), a correct file passes on the
    second test: its outputs are closer (SQNR) to the fake-quantised model's than that model's are to
    its float weights, which is what a deep depthwise network's accumulated rounding flips need."""
    pytest.importorskip("onnxruntime")
    from yolo4.export import ExportOptions, export_model

    monkeypatch.setattr("yolo4.export.qat.QAT_CHECK_ATOL", 0.0)
    report = export_model(depthwise_qat, ExportOptions(format="onnx", img_size=(64, 64)), tmp_path / "dw.onnx").report
    assert report["int8_max_abs_diff"] > 0.0
    assert report["int8_sqnr_db"] >= report["float_sqnr_db"] > 10.0


def test_a_wrong_activation_scale_fails_the_check(depthwise_qat, tmp_path, monkeypatch):
    """The same check on a file whose first activation quantiser has 8x its trained scale (a coarser
    grid, as a misplaced or mis-exported range would give) refuses it, naming both SQNRs."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from yolo4.errors import ExportError
    from yolo4.export import ExportOptions, export_model
    from yolo4.export.onnx import check_input, check_qat_file

    options = ExportOptions(format="onnx", img_size=(64, 64), check=False)
    path = export_model(depthwise_qat, options, tmp_path / "dw.onnx").paths[0]
    proto = onnx.load(str(path))
    constants = {n.output[0]: n for n in proto.graph.node if n.op_type == "Constant"}
    act = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and "/act/" in n.name)
    value = next(a for a in constants[act.input[1]].attribute if a.name == "value")
    value.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(value.t) * 8, value.t.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))

    x = check_input(options, (64, 64))
    graph = _qdq_graph(depthwise_qat, (64, 64))
    check_qat_file(path, depthwise_qat, graph, x, options, report := {})  # the file as exported passes
    monkeypatch.setattr("yolo4.export.qat.QAT_CHECK_ATOL", 0.0)
    with pytest.raises(ExportError, match=r"broken\.onnx: .* dB, is below .* float weights"):
        check_qat_file(broken, depthwise_qat, graph, x, options, {})
    assert report["int8_max_abs_diff"] <= QAT_ONNX_ATOL


def test_the_summary_calls_a_qat_file_int8_and_names_what_it_was_checked_against(depthwise_qat, tmp_path):
    pytest.importorskip("onnxruntime")
    from yolo4.export import ExportOptions, export_model

    text = export_model(depthwise_qat, ExportOptions(format="onnx", img_size=(64, 64)), tmp_path / "dw.onnx").summary()
    assert "outputs=heads, int8 (quantisation-aware trained)" in text
    assert "int8 vs the fake-quantised PyTorch model on a fresh input: max difference" in text
    assert "float32" not in text.split("\n")[1]
