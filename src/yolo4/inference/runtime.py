"""Run exported models (ONNX in onnxruntime, TFLite in ai-edge-litert) behind the same
interface as the PyTorch network, so `Detector`, `yolo4 detect` and `yolo4 val` use them
with the same pre- and post-processing.

    net = load_exported("yolov4-tiny-int8.onnx")     # an nn.Module with .spec and .yolo_layers
    det = Detector(net, names=net.names)             # pre-processing from net.spec / metadata
    heads = net(images)                              # images: (B, 3, H, W) float in [0, 1]

What forward returns follows the file's "yolo4.outputs" metadata:
    heads    list of Tensor (B, A*(5+C), H_i, W_i), like `Darknet.forward`
    decoded  `DecodedHeads(boxes (B, N, 4), objectness = 1 (B, N), class_probs = scores (B, N, C))`
    nms      not accepted by forward (its output is final detections): use `detections(x)`.

A file with a static batch B is fed in chunks of B (the last chunk zero-padded), so any
batch size works. An int8-input TFLite model gets its input quantised with the file's
scale and zero point (exact for pixels / 255 when the scale is 1/255).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from yolo4.darknet import NetworkSpec, parse_cfg
from yolo4.errors import ExportError
from yolo4.ops.boxes import DecodedHeads

EXPORTED_SUFFIXES = (".onnx", ".tflite")


class ExportedModel(nn.Module):
    """Base of the runtime wrappers: metadata, spec, batching. Subclasses implement `_run`."""

    runtime = ""

    def __init__(self, path: str | os.PathLike, meta: dict[str, str]):
        super().__init__()
        self.path = Path(path)
        self.meta = dict(meta)
        if "yolo4.cfg" not in meta:
            raise ExportError(
                f"{self.path}: not a yolo4 export (no 'yolo4.cfg' metadata); export it with `yolo4 export`"
            )
        self.spec: NetworkSpec = parse_cfg(meta["yolo4.cfg"], f"{self.path}[yolo4.cfg]")
        self.outputs = meta.get("yolo4.outputs", "heads")
        self.names: list[str] = json.loads(meta.get("yolo4.names", "[]")) or None  # type: ignore[assignment]
        self.preprocess: dict[str, Any] = json.loads(meta.get("yolo4.preprocess", "{}"))
        self.quantization = json.loads(meta.get("yolo4.quantization", '"none"'))
        self.nms_settings = json.loads(meta["yolo4.nms"]) if "yolo4.nms" in meta else None
        self.static_batch: int | None = None  # set by subclasses

    @property
    def yolo_layers(self):
        return self.spec.yolo_layers

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.spec.net.height, self.spec.net.width

    @property
    def resize(self) -> str:
        """The pre-processing resize rule recorded at export ("stretch" or "letterbox")."""
        return str(self.preprocess.get("resize", "letterbox" if self.spec.net.letter_box else "stretch"))

    def _run(self, x: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw outputs of the file for float32 (B, 3, H, W), chunked to its static batch."""
        if x.shape[1:] != (3, *self.input_hw):
            raise ExportError(
                f"{self.path}: input must be (B, 3, {self.input_hw[0]}, {self.input_hw[1]}), got {tuple(x.shape)}"
            )
        b = self.static_batch
        if b is None or len(x) == b:
            return self._run(x)
        parts: list[list[np.ndarray]] = []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
            parts.append([o[:n] for o in self._run(chunk)])
        return [np.concatenate(group) for group in zip(*parts)]

    def forward(self, x: Tensor) -> list[Tensor] | DecodedHeads:
        """x: (B, 3, H, W) float in [0, 1]. Returns raw heads or DecodedHeads (see the module docstring)."""
        if self.outputs == "nms":
            raise ExportError(
                f"{self.path}: this model has NMS inside its graph and returns final detections; "
                "use ExportedModel.detections(), or export without --outputs nms for detect/val"
            )
        outs = [torch.from_numpy(np.ascontiguousarray(o)) for o in self.run_numpy(x.detach().cpu().float().numpy())]
        if self.outputs == "decoded":
            boxes, scores = outs
            return DecodedHeads(boxes, torch.ones(scores.shape[:2], dtype=scores.dtype), scores)
        return outs

    def detections(self, x: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """An NMS model's output per image: (boxes (K, 4) xyxy input pixels, scores (K,), class_ids (K,))
        sorted by decreasing score."""
        if self.outputs != "nms":
            raise ExportError(f"{self.path}: detections() needs a model exported with --outputs nms")
        batch_index, boxes, scores, class_ids = self.run_numpy(x.detach().cpu().float().numpy())
        out = []
        for i in range(x.shape[0]):
            sel = np.nonzero(batch_index == i)[0]
            order = sel[np.argsort(-scores[sel], kind="stable")]
            out.append(
                (
                    torch.from_numpy(boxes[order]),
                    torch.from_numpy(scores[order]),
                    torch.from_numpy(class_ids[order].astype(np.int64)),
                )
            )
        return out

    def latency_ms(self, repeats: int = 20, warmup: int = 3) -> float:
        """Median wall time (ms) of one call on a random input of the static batch (or 1)."""
        x = np.random.default_rng(0).random((self.static_batch or 1, 3, *self.input_hw), dtype=np.float32)
        for _ in range(warmup):
            self._run(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self._run(x)
            times.append((time.perf_counter() - t) * 1e3)
        return float(np.median(times))


# ================================================================== file readers
def require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:  # pragma: no cover - the extra is installed in development
        raise ExportError(f"ONNX export needs the 'onnx' extra: pip install 'yolo4[onnx]' ({e})") from None
    return onnx, onnxruntime


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict."""
    onnx, _ = require_onnx()
    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU InferenceSession (optionally limited to `threads` intra-op threads)."""
    _, ort = require_onnx()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def tflite_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `yolo4.*` metadata entries of a .tflite file."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise ExportError(
            f"reading .tflite files needs the 'tflite' extra: pip install 'yolo4[tflite]' ({e})"
        ) from None
    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    out = {}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        name = as_text(md.Name())
        if not name.startswith("yolo4."):
            continue
        buf = model.Buffers(md.Buffer())
        raw = buf.DataAsNumpy()
        if isinstance(raw, np.ndarray):
            out[name] = raw.tobytes().decode("utf-8")
        elif buf.Offset():
            out[name] = data[buf.Offset() : buf.Offset() + buf.Size()].decode("utf-8")
    return out


class OnnxModel(ExportedModel):
    """An exported .onnx file run in onnxruntime (CPU)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__(path, onnx_metadata(path))
        self.session = onnx_session(path, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x.astype(np.float32, copy=False)})


def _require_litert():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ExportError(
            f"running .tflite files needs the 'tflite' extra: pip install 'yolo4[tflite]' ({e})"
        ) from None
    return Interpreter


class TfliteModel(ExportedModel):
    """An exported .tflite file run in the ai-edge-litert interpreter (CPU, XNNPACK)."""

    runtime = "ai-edge-litert"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        Interpreter = _require_litert()
        super().__init__(path, tflite_metadata(path))
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output_details = sorted(self.interpreter.get_output_details(), key=lambda d: _output_order(d["name"]))
        self.static_batch = int(self.input["shape"][0])

    def _quantise_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32, copy=False)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], self._quantise_input(x))
        self.interpreter.invoke()
        outs = []
        for d in self.output_details:
            o = self.interpreter.get_tensor(d["index"])
            if o.dtype != np.float32:  # an int8 output: dequantise with its own scale
                scale, zero = d["quantization"]
                o = (o.astype(np.float32) - zero) * scale
            outs.append(o.copy())
        return outs


def _output_order(name: str) -> tuple[int, str]:
    """TFLite signature outputs are named `..._output_<k>...`; order them by k."""
    import re

    m = re.search(r"output_(\d+)", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def load_exported(path: str | os.PathLike, threads: int | None = None) -> ExportedModel:
    """An exported .onnx or .tflite file as an nn.Module for `Detector` (see the module docstring).

    Raises:
        ExportError naming the file when it is missing, has another suffix, or lacks yolo4 metadata.
    """
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: no such file")
    table = {".onnx": OnnxModel, ".tflite": TfliteModel}
    if p.suffix.lower() not in table:
        raise ExportError(f"{p}: not an exported model (expected {', '.join(EXPORTED_SUFFIXES)})")
    return table[p.suffix.lower()](p, threads)


def is_exported(path: Any) -> bool:
    """Whether `path` names a .onnx or .tflite file (what `load_exported` takes)."""
    return isinstance(path, (str, os.PathLike)) and Path(path).suffix.lower() in EXPORTED_SUFFIXES
