"""The TFLite int8 recipe's own parts: the leaky-ReLU-aware range (`leaky_range`, checked against
a brute-force simulation of int8 + leaky ReLU) and the bias re-scaling (`_requantize_biases`)."""

from __future__ import annotations

import numpy as np
import pytest

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
