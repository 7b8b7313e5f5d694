"""onnxruntime int8 calibration in chunks: the chunk size rule against brute force, the
activation estimate on a hand-built graph, and chunked min-max ranges equal to one pass."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from yolo4.export import ExportOptions, export_model  # noqa: E402
from yolo4.export.quantize import _quantize_ort, activation_bytes, calibration_chunk, network_nodes  # noqa: E402


def test_calibration_chunk_is_the_largest_divisor_that_fits():
    for items in range(1, 41):
        for item_bytes in (1, 3, 7, 10, 64):
            for budget in (0, 1, 5, 20, 100, 1000):
                fits = [d for d in range(1, items + 1) if items % d == 0 and d * item_bytes <= budget]
                assert calibration_chunk(items, item_bytes, budget) == max(fits, default=1)


def test_activation_bytes_counts_every_float_node_output():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert activation_bytes(model) == 2 * (4 * 2 * 4 * 8 * 8)  # c and y: (2, 4, 8, 8) float32 each


def _qdq_params(path) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))
    return {
        t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith(("_scale", "_zero_point"))
    }


def test_chunked_minmax_calibration_equals_one_pass(tiny, make_images, tmp_path):
    """A budget below one image's activations calibrates image by image; min-max ranges are
    the same as collecting all six at once."""
    fp32 = tmp_path / "fp32.onnx"
    export_model(tiny, ExportOptions(), fp32)
    calib = make_images(6, (128, 128), seed=21).numpy()
    _, exclude = network_nodes(fp32)
    whole, chunked = tmp_path / "whole.onnx", tmp_path / "chunked.onnx"
    _quantize_ort(fp32, whole, calib, "images", 1, exclude, "minmax", collect_bytes=1 << 40)
    _quantize_ort(fp32, chunked, calib, "images", 1, exclude, "minmax", collect_bytes=1)
    a, b = _qdq_params(whole), _qdq_params(chunked)
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=k)
