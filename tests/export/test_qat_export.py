"""yolo4.export.qat (named so beside tests/training/test_qat.py): a QAT network of a depthwise model
(yolo-fastest's building block) exports to an int8 ONNX that onnxruntime runs and that computes
what the fake-quantised PyTorch model does."""

from __future__ import annotations

import json

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


def _exported_weight_levels(path) -> list[tuple[int, int, int]]:
    """(groups, min, max) of the int8 levels each convolution's weights are exported with: the
    weights of every QuantizeLinear on a 4-d constant divided by their per-channel scale."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            values[n.output[0]] = numpy_helper.to_array(next(a.t for a in n.attribute if a.name == "value"))
    levels = []
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in values and values[n.input[0]].ndim == 4:
            w, scale = values[n.input[0]], values[n.input[1]]
            q = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -128, 127)  # what QuantizeLinear stores
            levels.append((w.shape[1], int(q.min()), int(q.max())))  # (in channels per group: 1 = depthwise)
    return levels


@pytest.mark.parametrize("bits", [7, 8])
def test_qat_weights_train_and_export_in_the_bits_asked(
    depthwise_qat, small_cfg_text, make_images, with_realistic_bn, tmp_path, bits
):
    """weight_bits=7 (the default): every convolution's weights but the depthwise ones are fake-quantised
    on -64..63 and exported with those int8 values (CPUs without VNNI add two such products without
    saturating), even after training widened them, and a restored checkpoint keeps it; the metadata
    says so (`weights_7bit`, which `int8_saturates` reads). weight_bits=8: the whole range."""
    pytest.importorskip("onnxruntime")
    import onnx

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export import ExportOptions, export_model
    from yolo4.export.qat import prepare_qat, qat_config, restore_qat, weight_bits
    from yolo4.inference.runtime import int8_saturates

    if bits == 7:
        qmodel = depthwise_qat
    else:
        torch.manual_seed(0)
        net = with_realistic_bn(Darknet(parse_cfg(depthwise_cfg(small_cfg_text))))
        qmodel = prepare_qat(net.eval(), make_images(8, (64, 64)), weight_bits=8).eval()
    assert weight_bits(qmodel) == bits
    base = Darknet(qmodel.spec)
    again = restore_qat(base, qat_config(qmodel))
    again.load_state_dict(qmodel.state_dict())
    assert weight_bits(again) == bits
    with torch.no_grad():  # training that widened the weights cannot leave the 7-bit grid
        for m in again.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3.0)
    for model, name in ((qmodel, "calibrated.onnx"), (again.eval(), "widened.onnx")):
        path = export_model(model, ExportOptions(format="onnx", img_size=(64, 64)), tmp_path / name).paths[0]
        levels = _exported_weight_levels(path)
        assert len(levels) == 5  # the 3x3 conv, depthwise, pointwise, depthwise, head
        dense = [lv for lv in levels if lv[0] > 1]
        depthwise = [lv for lv in levels if lv[0] == 1]
        if bits == 7:
            assert all(lo >= -64 and hi <= 63 for _, lo, hi in dense), levels
        else:
            assert max(max(-lo, hi) for _, lo, hi in dense) >= 127, levels
        assert max(max(-lo, hi) for _, lo, hi in depthwise) >= 127, levels  # depthwise: the whole range
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        recipe = json.loads(meta["yolo4.quantization"])
        assert recipe["weights_7bit"] is (bits == 7)
        assert ("7 bits" in recipe["weights"]) is (bits == 7)
        assert not int8_saturates(recipe, "openvino") or bits == 8


def test_the_quantised_weights_network_holds_qats_int8_weights(depthwise_qat):
    """What TFLite's own quantiser starts from after QAT: the float network whose conv weights are
    QAT's, each on its quantiser's grid (7-bit: -64..63 steps of scale / 63; depthwise: 8-bit), so
    that PT2E's 8-bit rounding moves them little; the float network's weights are off that grid."""
    from yolo4.export.qat import _weight_quantisers, float_network, quantised_weights_network

    quantisers = _weight_quantisers(depthwise_qat, torch.zeros(1, 3, 64, 64))
    assert len(quantisers) == 5
    name_of = {id(m): n for n, m in depthwise_qat.named_modules()}
    for net, on_grid in ((quantised_weights_network(depthwise_qat), True), (float_network(depthwise_qat), False)):
        convs = dict(net.named_modules())
        for q, conv in quantisers.items():
            w = convs[name_of[id(conv)]].weight.detach()
            steps = w / ((q.scale.detach().abs() + q.eps) / q.level_high).reshape(-1, 1, 1, 1)
            off = float((steps - steps.round()).abs().max())
            if on_grid:
                assert (
                    off < 1e-3 and q.level_low <= int(steps.min().round()) <= int(steps.max().round()) <= q.level_high
                )
            else:
                assert off > 0.1
