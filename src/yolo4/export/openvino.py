"""OpenVINO IR export (float32 and int8): `yolo4 export --format openvino`.

    report = export_openvino(model, "yolov4-tiny.xml", ExportOptions(format="openvino"), names)

The network goes through the ONNX exporter (the same traced graph, checked against PyTorch;
int8 by NNCF, or onnxruntime's quantiser with `int8_tool="onnxruntime"`, as a QDQ graph), then
OpenVINO's model converter turns it into IR (`model.xml` + `model.bin`); OpenVINO's CPU plugin
runs the QuantizeLinear/DequantizeLinear pairs as int8 kernels. The `yolo4.*` metadata goes
into the IR's rt_info under `yolo4/<key>` (`yolo4.inference.runtime.openvino_metadata`
reads it back). The float32 IR is checked against PyTorch on a second random input, with
OpenVINO's f32 precision hint (its CPU default on AVX-512 bf16/AMX machines is bf16).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolo4.darknet import Darknet
from yolo4.errors import ExportError
from yolo4.export.common import ExportOptions, input_hw
from yolo4.export.graph import build_graph
from yolo4.inference.runtime import OpenVinoModel, onnx_metadata, require_openvino

CHECK_ATOL = 1e-4  # float32 IR vs PyTorch, relative to max(1, |reference|)


def export_openvino(
    model: Darknet,
    path: str | os.PathLike,
    options: ExportOptions,
    names: list[str],
    calib: np.ndarray | None = None,
    calib_source: str = "",
) -> dict[str, Any]:
    """Export `model` to OpenVINO IR at `path` (.xml; the weights go to the .bin beside it).

    Args and Returns as `yolo4.export.onnx.export_onnx` (format must be "openvino").
    Raises:
        ExportError for options OpenVINO cannot honour, or when the float32 IR disagrees with PyTorch.
    """
    from yolo4.export.onnx import export_onnx

    ov = require_openvino()
    options.validate()
    if options.format != "openvino":
        raise ExportError(f"export_openvino got format '{options.format}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yolo4-openvino-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        report = export_onnx(
            model, onnx_path, dataclasses.replace(options, format="onnx", out=None), names, calib, calib_source
        )
        meta = onnx_metadata(onnx_path)
        ov_model = ov.convert_model(str(onnx_path))
    for key, value in meta.items():
        ov_model.set_rt_info(value, ["yolo4", key.removeprefix("yolo4.")])
    part = path.with_name(path.stem + ".part.xml")
    ov.save_model(ov_model, str(part), compress_to_fp16=False)
    os.replace(part, path)
    os.replace(part.with_suffix(".bin"), path.with_suffix(".bin"))
    report["path"] = path
    if options.check:
        hw = input_hw(model, options)
        graph = build_graph(model, options.outputs, hw, options.postprocess.labels)
        x = torch.rand(options.batch, 3, *hw, generator=torch.Generator().manual_seed(1))
        got = OpenVinoModel(path).run_numpy(x.numpy())
        with torch.no_grad():
            ref = graph(x)
        ref = [r.numpy() for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
        diff = max(
            float(np.abs(g - r).max(initial=0.0)) / max(1.0, float(np.abs(r).max(initial=0.0)))
            for g, r in zip(got, ref)
        )
        from yolo4.export.qat import is_qat

        int8 = options.int8 or is_qat(model)
        key = "int8_max_abs_diff" if int8 else "max_abs_diff"
        report[key] = diff
        if not int8 and diff > CHECK_ATOL:
            raise ExportError(
                f"{path}: OpenVINO output differs from PyTorch by {diff:.3g} "
                f"(relative to the output scale; allowed {CHECK_ATOL})"
            )
    return report
