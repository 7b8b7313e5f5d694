"""The TFLite int8 recipe's own parts: the leaky-ReLU-aware range (`leaky_range`, checked against
a brute-force simulation of int8 + leaky ReLU), the bias re-scaling (`_requantize_biases`) and a
tensor read by a conv and a concatenation keeping its own scale in the file (`_copy_concat_inputs`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolo4.export.tflite import leaky_range


def _error_after_leaky(x: np.ndarray, lo: float, hi: float, slope: float) -> float:
    """Mean squared error of leaky(int8 fake-quantised x) against leaky(x), x quantised on [lo, hi]."""
    scale = (hi - lo) / 255
    zero = np.round(-128 - lo / scale)
    q = np.clip(np.round(x / scale) + zero, -128, 127)
    xq = (q - zero) * scale

    def leaky(v):
        return np.where(v >= 0, v, slope * v)

    return float(np.mean((leaky(xq) - leaky(x)) ** 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaky_range_beats_fitting_the_tensor(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 3, 200_000), rng.normal(0, 3, 200_000) * rng.uniform(0.5, 2)])  # ~symmetric
    lo, hi = float(x.min()), float(x.max())
    hist, _ = np.histogram(x, bins=2048, range=(lo, hi))
    new_lo, new_hi = leaky_range(hist, lo, hi, slope=0.1)
    assert lo <= new_lo <= 0 <= new_hi <= hi
    assert new_lo / lo < new_hi / hi  # the negative side, shrunk 10x by the activation, is clipped more
    ours = _error_after_leaky(x, new_lo, new_hi, 0.1)
    assert ours < 0.7 * _error_after_leaky(x, lo, hi, 0.1)  # min/max of the tensor
    sym = max(-lo, hi)
    assert ours < 0.7 * _error_after_leaky(x, -sym, sym, 0.1)
    # brute force over a coarse grid of ranges: none is clearly better than the search's choice
    grid = [(a, b) for a in np.linspace(lo, 0, 17)[:-1] for b in np.linspace(hi, 0, 17)[:-1]]
    assert ours <= 1.02 * min(_error_after_leaky(x, a, b, 0.1) for a, b in grid)


def test_leaky_range_of_a_relu_like_tensor_keeps_the_top():
    rng = np.random.default_rng(3)
    x = np.abs(rng.normal(0, 2, 100_000))  # no negative values at all
    hist, _ = np.histogram(x, bins=512, range=(0.0, float(x.max())))
    lo, hi = leaky_range(hist, 0.0, float(x.max()), slope=0.1)
    assert lo == 0.0 and hi > 0.5 * float(x.max())


def test_requantize_biases_rescales_a_stale_bias_only():
    pytest.importorskip("ai_edge_litert", reason="the 'tflite' extra (ai-edge-litert) is not installed")
    from ai_edge_litert import schema_py_generated as schema

    from yolo4.export.tflite import _requantize_biases

    def tensor(buffer: int, ttype: int, scales: list[float]):
        t = schema.TensorT()
        t.buffer, t.type = buffer, ttype
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = scales, [0] * len(scales)
        return t

    def buffer(values: np.ndarray):
        b = schema.BufferT()
        b.data = np.frombuffer(values.tobytes(), dtype=np.uint8).copy()
        return b

    m = schema.ModelT()
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CONV_2D
    m.operatorCodes = [code]
    m.buffers = [schema.BufferT(), buffer(np.array([100, 50], np.int32)), buffer(np.array([7, 9], np.int32))]
    sg = schema.SubGraphT()
    sg.tensors = [
        tensor(0, schema.TensorType.INT8, [0.5]),  # input, scale 0.5
        tensor(0, schema.TensorType.INT8, [0.1, 0.2]),  # weights
        tensor(1, schema.TensorType.INT32, [0.01, 0.02]),  # stale bias: real values 1.0, 1.0
        tensor(2, schema.TensorType.INT32, [0.05, 0.1]),  # bias already at 0.5 * weight scale
    ]
    stale, good = schema.OperatorT(), schema.OperatorT()
    stale.opcodeIndex = good.opcodeIndex = 0
    stale.inputs, good.inputs = [0, 1, 2], [0, 1, 3]
    sg.operators = [stale, good]
    m.subgraphs = [sg]
    assert _requantize_biases(m) == 1
    assert np.allclose(sg.tensors[2].quantization.scale, [0.05, 0.1])
    assert np.frombuffer(np.asarray(m.buffers[1].data, np.uint8).tobytes(), np.int32).tolist() == [20, 10]
    assert np.frombuffer(np.asarray(m.buffers[2].data, np.uint8).tobytes(), np.int32).tolist() == [7, 9]


# blocks 1-3 put between the small test network's stem (block 0: a 3x3 leaky conv) and its head:
# block 2 (a 1x1 leaky conv) is read by a 5x5 depthwise conv (block 3) and, through an upsample, by
# a concatenation with block 0 (yolo-fastest's layers 115-124). Block 0 also feeds block 1, a conv
# of kernel {k}.
MIDDLE = """[convolutional]
batch_normalize=1
filters=16
size={k}
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
activation=leaky
[convolutional]
batch_normalize=1
filters=8
groups=8
size=5
stride=1
pad=1
activation=leaky
"""
ROUTE = """[route]
layers=-4
[upsample]
stride=2
[route]
layers=-1,0
"""


def shared_cfg(small_cfg_text: str, kernel: int) -> str:
    """The network above: stem, MIDDLE, head (blocks 4-5), ROUTE (6-8), head again (9-10)."""
    at = small_cfg_text.index("[convolutional]\nfilters=21")
    stem, head = small_cfg_text[:at], small_cfg_text[at:]
    return stem + MIDDLE.format(k=kernel) + head + ROUTE + head


INT8_TOLERANCE = 0.06  # mean |int8 - float| / mean |float| of each head (measured: 0.028-0.033)


def _ops(content: bytes) -> list[tuple[str, list[float], list[float]]]:
    """(op name, scales of its int8 activation inputs, scales of its outputs) in file order."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    sg = m.subgraphs[0]

    def scales(indices) -> list[float]:
        ts = [sg.tensors[i] for i in indices if i >= 0]
        return [float(t.quantization.scale[0]) for t in ts if t.buffer == 0 and t.type == schema.TensorType.INT8]

    out = []
    for op in sg.operators:
        code = m.operatorCodes[op.opcodeIndex]
        out.append((names[max(code.builtinCode, code.deprecatedBuiltinCode)], scales(op.inputs), scales(op.outputs)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [1, 3])
def test_a_tensor_read_by_a_conv_and_a_concat_keeps_its_own_scale(
    kernel, small_cfg_text, make_images, with_realistic_bn, tmp_path
):
    """litert-torch 0.10 gave such a tensor the concatenation's (coarser) scale, and with a padded
    conv among its readers (kernel 3) refused the network; yolo4 quantises a copy for the
    concatenation, so the file requantizes (QUANTIZE int8 -> int8) into its scale."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export import ExportOptions
    from yolo4.export.tflite import export_tflite

    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(shared_cfg(small_cfg_text, kernel)))).eval()
    with torch.no_grad():
        net.blocks[0].conv.weight.mul_(8)  # the concatenation's other input spans a wider range
    calib = make_images(16, (64, 64)).numpy()
    out = tmp_path / "shared-int8.tflite"
    export_tflite(net, out, ExportOptions(format="tflite", int8=True, calib="random", check=False), ["a", "b"], calib)
    ops = _ops(out.read_bytes())
    [dw] = [o for o in ops if o[0] == "DEPTHWISE_CONV_2D"]
    [cat] = [o for o in ops if o[0] == "CONCATENATION"]
    with torch.no_grad():  # block 2's output over the calibration images: its own int8 step is at most range / 255
        t = net.blocks[2](net.blocks[1](net.blocks[0](torch.from_numpy(calib), []), []), [])
    own = float(t.max() - t.min()) / 255
    assert dw[1][0] <= 1.01 * own < cat[2][0] / 2  # the conv reads the fine step, the concatenation the coarse one
    requantize = [o for o in ops if o[0] == "QUANTIZE"]
    assert requantize and all(o[1] and o[2] == cat[2] for o in requantize)  # int8 -> int8, into the concat's scale
    # int8 tracks float on another input, with the XNNPACK and with the reference kernels
    x = make_images(1, (64, 64), seed=9).numpy()
    with torch.no_grad():
        ref = sorted((r.numpy() for r in net(torch.from_numpy(x))), key=lambda r: r.shape[-1])
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_REF):
        it = Interpreter(model_path=str(out), experimental_op_resolver_type=resolver)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        scale, zero = d["quantization"]
        it.set_tensor(d["index"], np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8))
        it.invoke()
        got = sorted((it.get_tensor(o["index"]) for o in it.get_output_details()), key=lambda g: g.shape[-1])
        for g, r in zip(got, ref, strict=True):
            assert float(np.abs(g - r).mean() / np.abs(r).mean()) < INT8_TOLERANCE, resolver


SHORTCUT = """[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
activation=leaky
[shortcut]
from=-2
activation=linear
"""


@pytest.mark.slow
def test_a_shortcut_addition_is_int8(small_cfg_text, make_images, with_realistic_bn, tmp_path):
    """litert-torch 0.10's own `add` annotator matches nothing in torch 2.14's graphs, which left
    every [shortcut] in float (DEQUANTIZE -> ADD -> QUANTIZE); yolo4 annotates additions itself."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export import ExportOptions
    from yolo4.export.tflite import export_tflite

    at = small_cfg_text.index("[convolutional]\nfilters=21")
    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(small_cfg_text[:at] + SHORTCUT + small_cfg_text[at:]))).eval()
    out = tmp_path / "shortcut-int8.tflite"
    options = ExportOptions(format="tflite", int8=True, calib="random", check=False)
    export_tflite(net, out, options, ["a", "b"], make_images(8, (64, 64)).numpy())
    ops = _ops(out.read_bytes())
    [add] = [o for o in ops if o[0] == "ADD"]
    assert len(add[1]) == 2 and len(add[2]) == 1  # both inputs and the output int8
    assert [o[0] for o in ops].count("DEQUANTIZE") == 1  # only the output's


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equalising_scales_match_a_brute_force_search(seed):
    """Each factor is the largest one (on a fine grid) that keeps the channel inside the tensor's range."""
    from yolo4.export.tflite import equalising_scales

    rng = np.random.default_rng(seed)
    lo = -rng.exponential(0.5, 12) * (rng.random(12) < 0.8)  # some channels never negative
    hi = rng.exponential(3.0, 12)
    hi[0], lo[1], hi[1] = 0.0, -2.0, -0.5  # a channel never positive; one entirely negative
    lo[2] = hi[2] = 0.0  # a dead channel: left alone
    top = max(hi.max(), 0.0) * (0.5 if seed == 2 else 1.0)  # seed 2: channels above the top shrink
    got = equalising_scales(lo, hi, top if seed == 2 else None, limit=1e3)
    bottom = min(lo.min(), 0.0)
    grid = np.geomspace(1e-3, 1e3, 400_001)
    for c in range(12):
        fits = grid[(grid * min(lo[c], 0.0) >= bottom * (1 + 1e-9)) & (grid * max(hi[c], 0.0) <= top * (1 + 1e-9))]
        assert got[c] == pytest.approx(fits.max(), rel=1e-4), c
    assert got[2] == 1e3 and (got >= 1).all() == (seed != 2)


# MIDDLE's last two blocks: a 1x1 leaky conv (block 1) read only by a 5x5 depthwise conv (block 2),
# between the small test network's stem (block 0) and its head
DEPTHWISE = MIDDLE.split("activation=leaky\n", 1)[1]


def _int8_error(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) fake-quantised with one asymmetric int8 scale (min/max), minus x."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255
    zero = round(-128 - lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale - x


def test_equalised_depthwise_input_keeps_the_function_and_suits_one_scale(
    small_cfg_text, make_images, with_realistic_bn
):
    """Negating an always-negative leaky channel and stretching the others changes no output, and
    the depthwise conv's output error from one int8 scale on its input drops (measured 6.3x)."""
    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export.tflite import equalise_depthwise_inputs

    at = small_cfg_text.index("[convolutional]\nfilters=21")
    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(small_cfg_text[:at] + DEPTHWISE + small_cfg_text[at:]))).eval()
    images = make_images(8, (64, 64))
    with torch.no_grad():
        bn = net.blocks[1].bn
        bn.weight[1:4] *= 0.05  # three narrow channels
        bn.bias[1:4] *= 0.05
        pre = net.blocks[1].pre_activation(net.blocks[0](images, []))
        bn.bias[0] -= float(pre[:, 0].max()) + 0.2  # channel 0 always negative, as wide as before
    out, pairs, flipped = equalise_depthwise_inputs(net, images.numpy())
    assert (pairs, flipped) == ([1], 1)
    with torch.no_grad():
        for a, b in zip(net(images), out(images)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        assert not torch.equal(net.blocks[1].bn.bias, out.blocks[1].bn.bias)  # the input was not changed

        def depthwise_error(model: Darknet) -> float:
            x = model.blocks[1](model.blocks[0](images, []), [])
            dw = model.blocks[2]
            ref = dw.bn(dw.conv(x))
            return float((dw.bn(dw.conv(x + _int8_error(x))) - ref).pow(2).mean() / ref.pow(2).mean())

        before, after = depthwise_error(net), depthwise_error(out)
    assert after < 0.3 * before, (before, after)


def _conv_mean_errors(gm, images: torch.Tensor, float_biases: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per conv of a converted PT2E graph, in graph order: the (C,) mean over images and pixels of
    conv(x, int8 weights, its bias) - conv(x, float weights, `float_biases`), x the graph's own input."""
    import functools

    errors: list[torch.Tensor] = []

    class Record(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.target is torch.ops.aten.conv2d.default:
                (x, wq, bias, *rest), _ = self.fetch_args_kwargs_from_env(n)
                src = n.args[1].args[0].args[0]  # dequantize(quantize(get_attr))
                w = functools.reduce(getattr, src.target.split("."), gm)
                ref = torch.nn.functional.conv2d(x, w, float_biases[n.args[2].target], *rest)
                self.errors.append((out - ref).mean((0, 2, 3)) / len(images))
            return out

    with torch.no_grad():
        for i in range(len(images)):  # one at a time: the graph was exported for batch 1
            run = Record(gm)
            run.errors = []
            run.run(images[i : i + 1])
            errors = run.errors if not errors else [a + b for a, b in zip(errors, run.errors)]
    return errors


@pytest.mark.slow
def test_bias_correction_removes_each_convs_mean_shift(small_cfg_text, make_images, with_realistic_bn):
    """After `correct_biases`, every conv's int8 output has the float conv's mean per channel on the
    calibration images (checked conv by conv against torch's conv2d with the float weights)."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    import copy
    import functools

    from torchao.quantization.pt2e import quantize_pt2e

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export.graph import build_graph
    from yolo4.export.tflite import _yolo_quantizer, correct_biases

    at = small_cfg_text.index("[convolutional]\nfilters=21")
    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(small_cfg_text[:at] + DEPTHWISE + small_cfg_text[at:]))).eval()
    images = make_images(8, (64, 64))
    graph = build_graph(net, "heads", (64, 64), "all")
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(graph, (images[:1],)).module(), _yolo_quantizer(False))
    with torch.no_grad():
        for i in range(len(images)):
            prepared(images[i : i + 1])
    gm = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    biases = {
        n.args[2].target: functools.reduce(getattr, n.args[2].target.split("."), gm).detach().clone()
        for n in gm.graph.nodes
        if n.target is torch.ops.aten.conv2d.default
    }
    before = _conv_mean_errors(copy.deepcopy(gm), images, biases)
    assert correct_biases(gm, images.numpy(), batch=1) == len(biases) == 4
    after = _conv_mean_errors(gm, images, biases)
    worst_before = max(float(e.abs().max()) for e in before)
    assert worst_before > 1e-3
    for e in after:
        assert float(e.abs().max()) < 1e-3 * worst_before


def new_coords_cfg(small_cfg_text: str) -> str:
    """The small network with its head made a one-class new_coords head (a logistic conv before it)."""
    at = small_cfg_text.index("[convolutional]\nfilters=21")
    head = small_cfg_text[at:].replace("filters=21", "filters=18").replace("activation=linear", "activation=logistic")
    return small_cfg_text[:at] + head.replace("classes=2", "classes=1\nnew_coords=1\nscale_x_y=2.0")


def test_a_new_coords_head_quantises_its_logits_in_the_head_range(
    small_cfg_text, make_images, with_realistic_bn, tmp_path
):
    """A new_coords head ends in a sigmoid, whose int8 output TFLite fixes at 1/256: the range
    that matters is the logits' before it. PT2E calibrated them like any tensor, and a one-class
    model's class logits (always large: +40 here, +107 on the trained csp-leaky) stretched it to
    0.2-0.5 per step for the box and objectness logits around 0 (csp-leaky on kangaroo: mAP50
    0.43 -> 0.29 in TFLite int8). They now get the heads' range, as a logit head's output does."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    from ai_edge_litert.interpreter import Interpreter

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export import ExportOptions
    from yolo4.export.tflite import HEAD_RANGE, export_tflite

    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(new_coords_cfg(small_cfg_text)))).eval()
    with torch.no_grad():
        net.blocks[-2].conv.bias.view(3, 6)[:, 5] = 40.0  # the class logit of each anchor
    calib = make_images(8, (64, 64)).numpy()
    out = tmp_path / "new-coords-int8.tflite"
    export_tflite(net, out, ExportOptions(format="tflite", int8=True, calib="random", check=False), ["a"], calib)
    x = make_images(2, (64, 64), seed=9).numpy()
    with torch.no_grad():
        [ref] = net(torch.from_numpy(x))
    it = Interpreter(model_path=str(out))
    it.allocate_tensors()
    d = it.get_input_details()[0]
    scale, zero = d["quantization"]
    got = []
    for image in x:
        it.set_tensor(d["index"], np.clip(np.round(image[None] / scale) + zero, -128, 127).astype(np.int8))
        it.invoke()
        got.append(it.get_tensor(it.get_output_details()[0]["index"]))
    err = np.abs(np.concatenate(got) - ref.numpy()).reshape(2, 3, 6, 32, 32)[:, :, :5]  # boxes and objectness
    [logistic] = [o for o in _ops(out.read_bytes()) if o[0] == "LOGISTIC"]
    assert logistic[1][0] <= 2 * HEAD_RANGE / 255 * 1.01  # the logits' step: 0.032 (before: 0.16)
    assert float(err.mean()) < 0.005  # in probability: 0.0020 (before: 0.0100)


def test_a_fixed_range_replaces_the_calibrated_one(small_cfg_text, make_images, with_realistic_bn, tmp_path):
    """`int8_ranges` (what a QAT run learned) set a layer output's int8 grid in the file: its scale
    is (max - min) / 255 and zero maps to an integer; without them the range is calibrated."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.errors import ExportError
    from yolo4.export import ExportOptions
    from yolo4.export.tflite import export_tflite

    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(small_cfg_text))).eval()
    calib = make_images(8, (64, 64)).numpy()

    def leaky_output(ranges) -> tuple[float, int]:
        out = tmp_path / f"fixed{len(ranges)}-int8.tflite"
        options = ExportOptions(format="tflite", int8=True, calib="random", check=False, int8_ranges=ranges)
        export_tflite(net, out, options, ["a", "b"], calib)
        m = flatbuffer_utils.read_model_from_bytearray(bytearray(out.read_bytes()))
        sg = m.subgraphs[0]
        for op in sg.operators:
            if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.LEAKY_RELU:
                q = sg.tensors[op.outputs[0]].quantization
                return float(q.scale[0]), int(q.zeroPoint[0])
        raise AssertionError("no LEAKY_RELU in the file")

    calibrated = leaky_output(())
    scale, zero = leaky_output(((0, -0.5, 3.0),))
    assert scale == pytest.approx(3.5 / 255, rel=1e-6) and zero == round(-128 + 0.5 / scale)
    assert abs(calibrated[0] - scale) > 0.05 * scale  # the calibrated range was another one
    with pytest.raises(ExportError, match="min < max"):
        ExportOptions(format="tflite", int8=True, calib="x", int8_ranges=((0, 1.0, 1.0),)).validate()
    with pytest.raises(ExportError, match="TFLite int8 only"):
        ExportOptions(format="onnx", int8=True, calib="x", int8_ranges=((0, -1.0, 1.0),)).validate()


def test_bias_correction_is_skipped_for_weights_trained_for_int8(
    small_cfg_text, make_images, with_realistic_bn, tmp_path, monkeypatch
):
    """`int8_bias_correction=False` (a QAT run's weights, whose biases NNCF already corrected) skips
    `correct_biases` and says so in the file's recipe; the default runs it once."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    import json

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.errors import ExportError
    from yolo4.export import ExportOptions, tflite
    from yolo4.inference.runtime import tflite_metadata

    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(small_cfg_text))).eval()
    calib = make_images(8, (64, 64)).numpy()
    calls: list[int] = []
    real = tflite.correct_biases
    monkeypatch.setattr(tflite, "correct_biases", lambda gm, c, b=1: calls.append(len(c)) or real(gm, c, b))
    recipes = {}
    for on in (True, False):
        out = tmp_path / f"bc{on}.tflite"
        options = ExportOptions(format="tflite", int8=True, calib="random", check=False, int8_bias_correction=on)
        tflite.export_tflite(net, out, options, ["a", "b"], calib)
        recipes[on] = json.loads(tflite_metadata(out)["yolo4.quantization"])["tool"]
    assert calls == [8]  # the default export only
    assert "biases corrected" in recipes[True] and "not corrected" in recipes[False]
    with pytest.raises(ExportError, match="TFLite int8 only"):
        ExportOptions(format="onnx", int8=True, calib="x", int8_bias_correction=False).validate()


def test_with_nncf_the_file_takes_nncfs_calibrated_ranges(small_cfg_text, make_images, with_realistic_bn, tmp_path):
    """int8_tool "nncf" (what "auto" picks when NNCF is installed): each layer output NNCF quantises
    gets NNCF's calibrated range (`nncf_ranges`, the ONNX recipe's) in the file; "onnxruntime" (no
    NNCF) leaves PT2E's own histogram calibration, a different range."""
    pytest.importorskip("litert_torch", reason="the 'tflite' extra (litert-torch) is not installed")
    pytest.importorskip("nncf", reason="the 'openvino' extra (NNCF) is not installed")
    import json

    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export import ExportOptions
    from yolo4.export.qat import nncf_ranges
    from yolo4.export.tflite import export_tflite
    from yolo4.inference.runtime import tflite_metadata

    torch.manual_seed(0)
    net = with_realistic_bn(Darknet(parse_cfg(small_cfg_text))).eval()
    calib = make_images(8, (64, 64)).numpy()

    def first_leaky(tool: str) -> tuple[float, str]:
        out = tmp_path / f"{tool}.tflite"
        export_tflite(
            net,
            out,
            ExportOptions(format="tflite", int8=True, calib="r", check=False, int8_tool=tool),
            ["a", "b"],
            calib,
        )
        m = flatbuffer_utils.read_model_from_bytearray(bytearray(out.read_bytes()))
        sg = m.subgraphs[0]
        op = next(
            o for o in sg.operators if m.operatorCodes[o.opcodeIndex].builtinCode == schema.BuiltinOperator.LEAKY_RELU
        )
        recipe = json.loads(tflite_metadata(out)["yolo4.quantization"])["activations"]
        return float(sg.tensors[op.outputs[0]].quantization.scale[0]), recipe

    lo, hi = nncf_ranges(net, torch.from_numpy(calib))[0]
    scale, recipe = first_leaky("nncf")
    assert scale == pytest.approx((hi - lo) / 255, rel=1e-5)
    assert "NNCF's calibrated ranges" in recipe
    own, recipe = first_leaky("onnxruntime")
    assert abs(own - scale) > 0.01 * scale and "NNCF" not in recipe
