"""Export to ONNX, TFLite (float32 and full int8) and darknet, and run the exported files.

    import yolo4
    yolo4.export("best.cfg", "best.weights", format="onnx", outputs="decoded")   # `yolo4 export`

    from yolo4.export import ExportOptions, export_model, load_exported
    export_model(model, ExportOptions(format="onnx", outputs="decoded"), "model.onnx")
    net = load_exported("model.onnx")          # nn.Module with .spec: Detector(net) runs it

Modules: `common` (options, metadata), `graph` (what is traced: heads, decoded, NMS inputs),
`onnx`, `tflite`, `darknet` (one exporter each), `quantize` (calibration, ONNX int8),
`runtime` (onnxruntime / ai-edge-litert runners), `run` (`yolo4 export`).
The heavy runtimes are optional extras: `pip install 'yolo4[onnx]'`, `'yolo4[tflite]'`.
"""

from __future__ import annotations

import sys
import types

from yolo4.export.common import FORMATS, OUTPUT_KINDS, ExportOptions
from yolo4.export.run import ExportResult, export_model, run_export
from yolo4.inference.runtime import ExportedModel, is_exported, load_exported

__all__ = [
    "FORMATS",
    "OUTPUT_KINDS",
    "ExportOptions",
    "ExportResult",
    "ExportedModel",
    "export_model",
    "is_exported",
    "load_exported",
    "run_export",
]


class _CallableModule(types.ModuleType):
    """`yolo4.export` is both this package and the public `yolo4.export(...)` function: Python
    binds a subpackage to its parent's attribute once it is imported, so a function of that
    name beside the package would be replaced by the package. Calling the package runs
    `run_export` (the same function as `yolo4.api.export`)."""

    def __call__(self, *args, **kwargs) -> ExportResult:
        return run_export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
