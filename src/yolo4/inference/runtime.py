"""Run exported models (ONNX in onnxruntime, TFLite in ai-edge-litert, OpenVINO IR) behind the same
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

Files are checked before they are run: a file that is not ONNX / TFLite, metadata that is
missing, not JSON or not what yolo4 writes (`parse_metadata`), and a graph whose input size
or output count disagrees with its metadata are all refused with an ExportError naming the
file and the key.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from yolo4.darknet import NetworkSpec, parse_cfg
from yolo4.errors import ExportError
from yolo4.inference.device import int8_dot_product
from yolo4.ops.boxes import DecodedHeads

EXPORTED_SUFFIXES = (".onnx", ".tflite", ".xml")
OUTPUT_KINDS = ("heads", "decoded", "nms")
RESIZE_RULES = ("stretch", "letterbox")


@dataclass(frozen=True)
class ExportMetadata:
    """The `yolo4.*` metadata of an exported file, checked (see `yolo4.export.common`).

    spec: the network (from `yolo4.cfg`); outputs: one of OUTPUT_KINDS; names: class names or
    None; preprocess: the pre-processing record; quantization: "none" or the int8 recipe;
    nms: the NMS settings of an "nms" graph, else None; version: the yolo4 that wrote it.
    """

    spec: NetworkSpec
    outputs: str
    names: list[str] | None
    preprocess: dict[str, Any]
    quantization: Any
    nms: dict[str, Any] | None
    version: str

    def num_outputs(self) -> int:
        """How many tensors the graph must return."""
        return {"heads": len(self.spec.yolo_layers), "decoded": 2, "nms": 4}[self.outputs]


def _json_entry(meta: Mapping[str, str], key: str, default: str, where: str) -> Any:
    raw = meta.get(key, default)
    if not isinstance(raw, str):
        raise ExportError(f"{where}: metadata {key} is not text")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ExportError(f"{where}: metadata {key} is not valid JSON ({type(e).__name__}: {e})") from None


def parse_metadata(meta: Mapping[str, str], where: str | os.PathLike) -> ExportMetadata:
    """Check and decode the `yolo4.*` metadata of the exported file `where`.

    Raises:
        ExportError (or CfgError for the embedded cfg text) naming the file and the key.
    """
    where = str(where)
    version = str(meta.get("yolo4.version", "unknown"))
    cfg = meta.get("yolo4.cfg")
    if not isinstance(cfg, str):
        raise ExportError(f"{where}: not a yolo4 export (no 'yolo4.cfg' metadata); export it with `yolo4 export`")
    spec = parse_cfg(cfg, f"{where}[yolo4.cfg]")
    if not spec.yolo_layers:
        raise ExportError(f"{where}: metadata yolo4.cfg has no [yolo] layer: nothing to decode")
    if spec.net.height <= 0 or spec.net.width <= 0:
        raise ExportError(f"{where}: metadata yolo4.cfg has input size {spec.net.width}x{spec.net.height}")
    outputs = meta.get("yolo4.outputs", "heads")
    if outputs not in OUTPUT_KINDS:
        raise ExportError(
            f"{where}: metadata yolo4.outputs={outputs!r} is none of {', '.join(OUTPUT_KINDS)} "
            f"(written by yolo4 {version}; a newer yolo4 may read it)"
        )
    names = _json_entry(meta, "yolo4.names", "[]", where)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ExportError(f"{where}: metadata yolo4.names is not a list of class names")
    classes = int(spec.yolo_layers[0].classes)
    if names and len(names) != classes:
        raise ExportError(f"{where}: metadata yolo4.names has {len(names)} names but the model {classes} classes")
    preprocess = _json_entry(meta, "yolo4.preprocess", "{}", where)
    if not isinstance(preprocess, dict):
        raise ExportError(f"{where}: metadata yolo4.preprocess is not a JSON object")
    if preprocess.get("resize", "stretch") not in RESIZE_RULES:
        raise ExportError(
            f"{where}: metadata yolo4.preprocess: resize {preprocess['resize']!r} is not stretch or letterbox"
        )
    quantization = _json_entry(meta, "yolo4.quantization", '"none"', where)
    nms = _json_entry(meta, "yolo4.nms", "null", where)
    if nms is not None and not isinstance(nms, dict):
        raise ExportError(f"{where}: metadata yolo4.nms is not a JSON object")
    return ExportMetadata(spec, outputs, names or None, preprocess, quantization, nms, version)


class ExportedModel(nn.Module):
    """Base of the runtime wrappers: metadata, spec, batching. Subclasses implement `_run`."""

    runtime = ""

    def __init__(self, path: str | os.PathLike, meta: dict[str, str]):
        super().__init__()
        self.path = Path(path)
        self.meta = dict(meta)
        self.metadata = parse_metadata(meta, self.path)
        self.spec: NetworkSpec = self.metadata.spec
        self.outputs = self.metadata.outputs
        self.names: list[str] | None = self.metadata.names
        self.preprocess: dict[str, Any] = self.metadata.preprocess
        self.quantization = self.metadata.quantization
        self.nms_settings = self.metadata.nms
        self.static_batch: int | None = None  # set by subclasses

    def _check_graph(self, input_shape: list, num_outputs: int) -> None:
        """The graph's input (B, 3, H, W) and output count must be what the metadata promise."""
        want = [3, *self.input_hw]
        dims = list(input_shape)
        if len(dims) != 4 or any(isinstance(d, int) and d != w for d, w in zip(dims[1:], want)):
            raise ExportError(
                f"{self.path}: the graph's input is {dims} but its metadata describe (B, 3, {want[1]}, {want[2]}): "
                "the file was altered after export"
            )
        if num_outputs != self.metadata.num_outputs():
            raise ExportError(
                f"{self.path}: the graph returns {num_outputs} tensors but its metadata "
                f"(outputs={self.outputs}) need {self.metadata.num_outputs()}: the file was altered after export"
            )

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

    def _warn_if_saturating(self) -> None:
        """A warning when this runtime's int8 kernels saturate on this CPU for this file (`int8_saturates`)."""
        if int8_saturates(self.quantization, self.runtime):
            safe = self.runtime == "openvino" and not int8_saturates(self.quantization, "onnxruntime")
            advice = ", or run it with --runtime onnxruntime" if safe else ""
            qat = "quantisation-aware" in str(self.quantization.get("tool", ""))
            again = "Train it again with --qat" if qat else "Export it again"
            warnings.warn(
                f"{self.path}: int8 weights with the whole 8-bit range, and this CPU has no VNNI: {self.runtime}'s "
                "int8 convolutions saturate here and lose accuracy (yolo-fastest-1.1: heads' SQNR 17-18 dB where "
                f"exact int8 gives 21-26 dB). {again} (int8 weights take 7 bits by default now){advice}",
                stacklevel=3,
            )

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
    """The metadata_props of an ONNX file as a dict. Raises ExportError for a file that is not ONNX."""
    onnx, _ = require_onnx()
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not a model
        raise ExportError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    return {p.key: p.value for p in m.metadata_props}


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An onnxruntime CPU InferenceSession (optionally limited to `threads` intra-op threads)."""
    _, ort = require_onnx()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's InvalidGraph, InvalidProtobuf, Fail, ...
        raise ExportError(f"{path}: onnxruntime cannot load this model ({type(e).__name__}: {e})") from None


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
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ExportError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[4:8] != b"TFL3":
        raise ExportError(f"{path}: not a TFLite model (no TFL3 identifier)")
    out = {}
    try:  # a damaged flatbuffer fails in many ways: offsets out of range, bad UTF-8, ...
        model = schema.Model.GetRootAs(data, 0)
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
    except Exception as e:
        raise ExportError(f"{path}: damaged TFLite model ({type(e).__name__}: {e})") from None
    return out


class OnnxModel(ExportedModel):
    """An exported .onnx file run in onnxruntime (CPU)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__(path, onnx_metadata(path))
        self.session = onnx_session(path, threads)
        inp = self.session.get_inputs()[0]
        self._check_graph(list(inp.shape), len(self.session.get_outputs()))
        self.input_name = inp.name
        self.static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self._warn_if_saturating()

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

    runtime = "tflite"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        Interpreter = _require_litert()
        super().__init__(path, tflite_metadata(path))
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # the interpreter raises ValueError/RuntimeError on a damaged model
            raise ExportError(
                f"{path}: the TFLite interpreter cannot load this model ({type(e).__name__}: {e})"
            ) from None
        self.input = self.interpreter.get_input_details()[0]
        self._check_graph([int(v) for v in self.input["shape"]], len(self.interpreter.get_output_details()))
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


def require_openvino():
    try:
        import openvino
    except ImportError as e:
        raise ExportError(f"OpenVINO needs the 'openvino' extra: pip install 'yolo4[openvino]' ({e})") from None
    return openvino


def openvino_metadata(model: Any) -> dict[str, str]:
    """The `yolo4.*` metadata of an OpenVINO model (rt_info entries under yolo4/<key>)."""
    if not model.has_rt_info(["yolo4"]):
        return {}
    info = model.get_rt_info(["yolo4"]).astype(dict)
    return {f"yolo4.{k}": str(v.astype(str) if hasattr(v, "astype") else v) for k, v in info.items()}


class OpenVinoModel(ExportedModel):
    """An exported OpenVINO IR (.xml + .bin), or a yolo4 .onnx file, run by OpenVINO's CPU plugin
    with the f32 precision hint (int8 layers of a quantised model still run in int8)."""

    runtime = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ov = require_openvino()
        core = ov.Core()
        try:
            # a .onnx file through convert_model, not read_model: on an AMD EPYC (Zen 4, OpenVINO
            # 2026.4) read_model's graph of an NNCF int8 file gave a small yolov4-tiny's heads a
            # correlation of 0.87-0.96 with float32, convert_model's 0.9999, as the IR export gets
            onnx_file = Path(path).suffix.lower() == ".onnx"
            model = ov.convert_model(str(path)) if onnx_file else core.read_model(str(path))
        except Exception as e:  # RuntimeError from read_model, openvino.tools.ovc's Error from convert_model
            raise ExportError(f"{path}: OpenVINO cannot read it ({str(e).splitlines()[0]})") from None
        meta = onnx_metadata(path) if Path(path).suffix.lower() == ".onnx" else openvino_metadata(model)
        super().__init__(path, meta)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self._warn_if_saturating()
        shape = self.compiled.inputs[0].get_partial_shape()
        self.static_batch = shape[0].get_length() if shape[0].is_static else None
        self.request = self.compiled.create_infer_request()

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        res = self.request.infer([np.ascontiguousarray(x, dtype=np.float32)])
        return [np.array(res[o]) for o in self.compiled.outputs]


class OpenCvModel(ExportedModel):
    """An exported .onnx file run by OpenCV's DNN module (CPU); the same graph, no extra package."""

    runtime = "opencv"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import cv2

        onnx, _ = require_onnx()
        super().__init__(path, onnx_metadata(path))
        graph = onnx.load(str(path), load_external_data=False).graph
        dims = [d.dim_value if d.HasField("dim_value") else None for d in graph.input[0].type.tensor_type.shape.dim]
        self._check_graph(dims, len(graph.output))
        self.output_names = [o.name for o in graph.output]
        self.static_batch = dims[0] if dims and dims[0] else None
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as e:
            raise ExportError(f"{path}: OpenCV DNN cannot read it ({str(e).strip().splitlines()[-1]})") from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        if threads:
            cv2.setNumThreads(int(threads))

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        self.net.setInput(np.ascontiguousarray(x, dtype=np.float32))
        return [np.array(o) for o in self.net.forward(self.output_names)]


RUNTIMES = ("auto", "pytorch", "onnxruntime", "openvino", "tflite", "opencv")
READERS: dict[str, dict[str, Callable[[Path, int | None], ExportedModel]]] = {
    ".onnx": {"onnxruntime": OnnxModel, "openvino": OpenVinoModel, "opencv": OpenCvModel},
    ".tflite": {"tflite": TfliteModel},
    ".xml": {"openvino": OpenVinoModel},
}
_PACKAGES = {  # runtime -> (the module it needs, the yolo4 extra that installs it)
    "onnxruntime": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "openvino"),
    "tflite": ("ai_edge_litert", "tflite"),
    "opencv": ("cv2", ""),
}


def installed(runtime: str) -> bool:
    """Whether the package `runtime` needs can be imported here (found, not imported)."""
    import importlib.util

    module = _PACKAGES.get(runtime, ("torch", ""))[0]
    return importlib.util.find_spec(module) is not None


def runtime_preference(path: str | os.PathLike) -> tuple[tuple[str, ...], str]:
    """The runtimes that can run the exported file `path`, fastest first, and why, by a rule measured with
    `yolo4 benchmark --backends` (README, "CPU back-ends side by side"):

    .tflite: tflite. .xml: openvino. A .onnx file: onnxruntime, then openvino, then opencv (OpenCV DNN
    was the slowest; onnxruntime and OpenVINO are within 5 % of each other on float32), except an int8
    file quantised by NNCF: openvino first, because onnxruntime's kernels do not fuse NNCF's QDQ layout
    and run it about 2x slower (270 against 137 ms for yolov4-tiny at 416, one thread), unless its
    weights use the whole 8-bit range and this CPU has no VNNI (`int8_saturates`).
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".tflite":
        return ("tflite",), "the one runtime of .tflite files"
    if suffix == ".xml":
        return ("openvino",), "the one runtime of OpenVINO IR"
    quant = json.loads(onnx_metadata(path).get("yolo4.quantization", '"none"'))
    if isinstance(quant, dict) and str(quant.get("tool", "")).startswith("nncf"):
        if int8_saturates(quant, "openvino"):
            return ("onnxruntime", "openvino", "opencv"), (
                "NNCF int8 with 8-bit weights on a CPU without VNNI: OpenVINO's int8 kernels saturate here, onnxruntime's do not"
            )
        return ("openvino", "onnxruntime", "opencv"), "NNCF int8: OpenVINO runs it in int8, ~2x onnxruntime"
    return ("onnxruntime", "openvino", "opencv"), "the fastest measured for .onnx"


def int8_saturates(quantization: Any, runtime: str) -> bool:
    """Whether `runtime`'s int8 kernels lose accuracy on this CPU for a file with the int8 recipe
    `quantization` (its `yolo4.quantization` metadata): weights that use the whole 8-bit range (files
    written before 7 bits became the default, `--int8-weight-bits 8`, `--qat --set qat_weight_bits=8`) on a CPU without
    VNNI (`int8_dot_product`). Measured on yolo-fastest-1.1 on an AVX2 AMD EPYC, heads' SQNR against
    float32, the runtime's against the exact int8 arithmetic: OpenVINO with any such file (NNCF's:
    18.1 against 26.3 dB); onnxruntime with its own quantiser's files (signed int8 activations:
    17.2 against 21.0 dB) but not with NNCF's (26.35 against 26.30)."""
    if not isinstance(quantization, dict) or quantization.get("weights_7bit") or int8_dot_product():
        return False
    if runtime == "openvino":
        return True
    return runtime == "onnxruntime" and str(quantization.get("tool", "")).startswith("onnxruntime")


def choose_runtime(path: str | os.PathLike) -> str:
    """The fastest installed runtime for the exported file `path` (`runtime_preference`, first installed).

    Raises:
        ExportError naming the file and what to install when none of its runtimes is installed.
    """
    order, _ = runtime_preference(path)
    for name in order:
        if installed(name):
            return name
    extras = " or ".join(f"pip install 'yolo4[{_PACKAGES[n][1]}]'" for n in order if _PACKAGES[n][1])
    raise ExportError(f"{path}: no runtime for {Path(path).suffix} files is installed ({extras})")


def resolve_runtime(model: Any, runtime: str = "auto", announce: bool = False) -> str:
    """The runtime `--runtime` names for `model` (a zoo name, .cfg, exported file or module):
    "pytorch" for darknet models and modules, `choose_runtime` for an exported file under "auto".
    `announce`: say on stderr which runtime "auto" chose for an exported file, and why.

    Raises:
        ExportError (a Yolo4Error) naming the model when `runtime` is unknown, cannot read its file
        format, or is not installed here (with the pip command that installs it).
    """
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    if not is_exported(model):
        if runtime not in ("auto", "pytorch"):
            raise ExportError(
                f"{model}: --runtime {runtime} runs exported files ({', '.join(EXPORTED_SUFFIXES)}); a darknet "
                "model runs in pytorch (`yolo4 export` it first)"
            )
        return "pytorch"
    suffix = Path(model).suffix.lower()
    if runtime == "auto":
        name = choose_runtime(model)
        if announce:
            import sys

            why = runtime_preference(model)[1]
            print(f"runtime: {name} for {Path(model).name} (auto: {why}; installed here)", file=sys.stderr)
        return name
    if runtime not in READERS[suffix]:
        raise ExportError(f"{model}: {runtime} cannot run {suffix} files (use {', '.join(READERS[suffix])})")
    if not installed(runtime):
        module, extra = _PACKAGES[runtime]
        raise ExportError(
            f"{model}: --runtime {runtime} is not installed here (no module '{module}'): pip install 'yolo4[{extra}]'"
        )
    return runtime


def load_exported(path: str | os.PathLike, threads: int | None = None, runtime: str = "auto") -> ExportedModel:
    """An exported .onnx, .tflite or OpenVINO .xml file as an nn.Module for `Detector` (see the
    module docstring).

    Args:
        threads: CPU threads for the runtime (None: its default).
        runtime: "auto" (`choose_runtime`), or "onnxruntime" / "openvino" / "opencv" for a .onnx file,
            "openvino" for .xml, "tflite" for .tflite (see `resolve_runtime`).
    Raises:
        ExportError naming the file when it is missing, has another suffix, lacks yolo4 metadata,
        or `runtime` cannot read it or is not installed.
    """
    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{p}: is a folder, not an exported model")
    if not p.is_file():
        raise ExportError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix not in READERS:
        raise ExportError(f"{p}: not an exported model (expected {', '.join(EXPORTED_SUFFIXES)})")
    return READERS[suffix][resolve_runtime(p, runtime)](p, threads)


def is_exported(path: Any) -> bool:
    """Whether `path` names a .onnx, .tflite or .xml file (what `load_exported` takes)."""
    return isinstance(path, (str, os.PathLike)) and Path(path).suffix.lower() in EXPORTED_SUFFIXES
