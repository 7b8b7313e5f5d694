"""What every exporter shares: the options, the metadata written into exported files, and
the pre-processing record.

Metadata keys (ONNX `metadata_props`; TFLite: entries of the flatbuffer's metadata table,
each a buffer of UTF-8 text):

    yolo4.version      package version that wrote the file
    yolo4.outputs      "heads" | "decoded" | "nms" (what the graph returns, see OUTPUT_KINDS)
    yolo4.cfg          the network's darknet cfg text at the exported input size (anchors,
                       classes, scale_x_y, new_coords: everything decoding needs)
    yolo4.names        JSON list of class names
    yolo4.preprocess   JSON: how to turn an image into the input tensor, exactly as the
                       calibration images were prepared (resize rule, colour order, scale,
                       layout, input (height, width), letterbox fill)
    yolo4.quantization JSON: "none", or the int8 recipe (tool, calibration count and source,
                       per-channel, method, what stays float)
    yolo4.nms          JSON (only for "nms" graphs): conf, iou, nms, labels, max_det (per class)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolo4.darknet import Darknet, NetworkSpec, format_cfg
from yolo4.errors import ExportError
from yolo4.inference.runtime import OUTPUT_KINDS as OUTPUT_KINDS  # what the runtime reads
from yolo4.ops.nms import DETECT_POSTPROCESS, PostprocessConfig

FORMATS = ("onnx", "tflite", "openvino", "darknet")
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml", "darknet": ".cfg"}
CALIB_METHODS = ("minmax", "percentile", "entropy")
INT8_TOOLS = ("auto", "nncf", "onnxruntime")


INT8_WEIGHT_BITS = (7, 8)  # int8 weights in 7 bits (CPUs without VNNI do not saturate) or all 8


@dataclass(frozen=True)
class ExportOptions:
    """How to export (one object, validated by `validate`).

    format: "onnx", "tflite", "openvino" (IR .xml + .bin) or "darknet".
    img_size: exported input (height, width); None: the cfg's [net] size.
    batch: static batch size; dynamic_batch: a symbolic batch axis instead (ONNX only).
    outputs: what the graph returns (`yolo4 export --outputs`):
        "heads"   the raw [yolo] head tensors (B, A*(5+C), H_i, W_i), for NPU toolchains;
        "decoded" boxes (B, N, 4) xyxy input pixels and scores (B, N, C), separate tensors;
        "nms"     decoded, then ONNX NonMaxSuppression (ONNX only), with `postprocess`: scores >
                  conf, class-aware greedy IoU > iou suppression, at most max_det per class,
                  its labels rule ("best": one class per box, as `yolo4 detect`; "all": darknet's).
    postprocess: the in-graph NMS settings (only for outputs="nms"; default `DETECT_POSTPROCESS`;
        nms must be "greedy", the only kind ONNX NonMaxSuppression computes).
    int8: post-training int8 quantisation with `calib_count` images from `calib`
        (a dataset accepted by yolo4.data or a folder of images); `calib_method` picks the
        ONNX activation ranges: "percentile" (99.999th; on the demo model it kept 0.7 mAP50
        points more than "minmax"), "minmax" or "entropy" (TFLite's
        PT2E quantiser always uses its histogram observer).
    int8_tool: who quantises ONNX and OpenVINO: "nncf" (asymmetric activations + fast bias
        correction; kept the real yolo-fastest-1.1's detections where onnxruntime's did not),
        "onnxruntime" (`quantize_static` with `calib_method`), "auto": NNCF when installed.
        For TFLite, "nncf" (or "auto" with NNCF installed) sets the activation ranges from NNCF's
        calibration, "onnxruntime" leaves them to PT2E's histogram observers.
    int8_keep_float: cfg layer indices kept in float (mixed precision), by hand.
    int8_ranges: fixed int8 ranges for layers' outputs, ((cfg layer index, min, max), ...), used
        instead of calibrating them (TFLite only): the ranges a QAT run learned, which its
        TFLite file keeps (`yolo4 train --qat`; equalised depthwise inputs are recalibrated).
    int8_bias_correction: correct each convolution's bias for the mean shift its int8 weights
        cause on the calibration images (TFLite only; ONNX and OpenVINO int8 get NNCF's own). Off for
        weights that quantisation-aware training already trained for int8 (`yolo4 train --qat`): NNCF
        corrected their biases before training, and PT2E rounds them to the same per-channel grid,
        so a second correction shifts them again (measured: 1.1 dB of heads' SQNR lost on yolo-fastest).
    int8_weight_bits: the range of ONNX and OpenVINO int8 weights (NNCF's and onnxruntime's
        quantisers). 7 (default): -64..64 in every convolution but the depthwise ones, so that CPUs
        without VNNI (AVX2, AVX-512 before Cascade Lake), whose int8 kernels add u8 x s8 products in
        saturating 16 bits, compute what the file says: OpenVINO's int8 yolo-fastest-1.1 on an AVX2
        AMD EPYC kept a heads' SQNR of 25.9 dB with 7-bit weights and 18.2 dB with 8-bit ones. 8:
        the whole range, about 0.5 dB better where int8 arithmetic is exact (VNNI or AMX CPUs, NPUs
        that quantise the float graph themselves). TFLite files always use 8 bits (XNNPACK's int8
        kernels do not saturate: the same agreement on the AVX2 EPYC as on a VNNI Xeon).
    int8_min_agreement: choose the float layers automatically: keep the most sensitive layers
        (`yolo4.export.sensitivity`) float until simulated int8 keeps this share of float32's
        detections on the calibration images (None: off). int8_max_float caps their number.
    analyse: print the per-layer int8 sensitivity table and write `<out>.sensitivity.png`.
    opset: ONNX opset (>= 17; >= 18 when the network uses Mish, which opset 18 has natively).
    out: output file; None: next to the weights, named after the model and options.
    check: run the exported file in its runtime on a fresh input and compare with PyTorch.
    """

    format: str = "onnx"
    img_size: tuple[int, int] | None = None
    batch: int = 1
    dynamic_batch: bool = False
    outputs: str = "heads"
    postprocess: PostprocessConfig = DETECT_POSTPROCESS
    int8: bool = False
    calib: str | None = None
    calib_count: int = 100
    calib_split: str = "train"
    calib_method: str = "percentile"
    int8_tool: str = "auto"
    int8_keep_float: tuple[int, ...] = ()
    int8_ranges: tuple[tuple[int, float, float], ...] = ()
    int8_bias_correction: bool = True
    int8_weight_bits: int = 7
    int8_min_agreement: float | None = None
    int8_max_float: int = 8
    analyse: bool = False
    opset: int | None = None
    out: str | None = None
    check: bool = True

    def validate(self) -> None:
        """Raise ExportError for option combinations no exporter can honour (before any work)."""
        if self.format not in FORMATS:
            raise ExportError(f"unknown export format '{self.format}' (choose from {', '.join(FORMATS)})")
        if self.batch < 1:
            raise ExportError(f"--batch must be >= 1, got {self.batch}")
        if self.img_size is not None and (min(self.img_size) <= 0 or self.img_size[0] % 32 or self.img_size[1] % 32):
            raise ExportError(f"--img-size {self.img_size} must be positive multiples of 32")
        if self.outputs not in OUTPUT_KINDS:
            raise ExportError(f"unknown --outputs '{self.outputs}' (choose from {', '.join(OUTPUT_KINDS)})")
        if not isinstance(self.postprocess, PostprocessConfig):
            raise ExportError(f"postprocess must be a PostprocessConfig, not {type(self.postprocess).__name__}")
        if self.outputs == "nms" and self.postprocess.nms != "greedy":
            raise ExportError(
                f"--outputs nms ends the graph with ONNX NonMaxSuppression, which is class-aware greedy NMS; "
                f"--nms {self.postprocess.nms} cannot be exported (use --nms greedy, or --outputs decoded and "
                "run that NMS outside)"
            )
        if self.int8 and self.calib_count < 1:
            raise ExportError(f"--calib-count must be >= 1, got {self.calib_count}")
        if self.calib_method not in CALIB_METHODS:
            raise ExportError(
                f"unknown calibration method '{self.calib_method}' (choose from {', '.join(CALIB_METHODS)})"
            )
        if self.int8_tool not in INT8_TOOLS:
            raise ExportError(f"unknown int8 tool '{self.int8_tool}' (choose from {', '.join(INT8_TOOLS)})")
        if self.int8_weight_bits not in INT8_WEIGHT_BITS:
            raise ExportError(f"--int8-weight-bits must be 7 or 8, got {self.int8_weight_bits}")
        if self.int8_min_agreement is not None and not 0.0 < self.int8_min_agreement <= 1.0:
            raise ExportError(f"--int8-min-agreement must be in (0, 1], got {self.int8_min_agreement}")
        if any(i < 0 for i in self.int8_keep_float):
            raise ExportError(f"--int8-keep-float takes cfg layer indices >= 0, got {list(self.int8_keep_float)}")
        if self.int8_ranges and (self.format != "tflite" or not self.int8):
            raise ExportError("int8_ranges (a QAT model's learned ranges) apply to TFLite int8 only")
        if not self.int8_bias_correction and (self.format != "tflite" or not self.int8):
            raise ExportError("int8_bias_correction=False applies to TFLite int8 only (NNCF corrects ONNX/OpenVINO)")
        wrong = [r for r in self.int8_ranges if len(r) != 3 or r[0] < 0 or not r[1] < r[2]]
        if wrong:
            raise ExportError(f"int8_ranges take (layer index >= 0, min, max) with min < max, got {wrong[0]}")
        if (self.int8_keep_float or self.int8_min_agreement is not None or self.analyse) and not self.int8:
            raise ExportError("--int8-keep-float, --int8-min-agreement and --analyse need --int8")
        if self.int8 and not self.calib:
            raise ExportError("--int8 needs calibration images: --calib DATASET_OR_IMAGE_FOLDER")
        if self.format == "darknet":
            bad = [
                flag
                for flag, on in (
                    ("--int8", self.int8),
                    (f"--outputs {self.outputs}", self.outputs != "heads"),
                    ("--dynamic-batch", self.dynamic_batch),
                )
                if on
            ]
            if bad:
                raise ExportError(
                    f"--format darknet writes the network as .cfg + .weights; {', '.join(bad)} "
                    "cannot be expressed there"
                )
        if self.format == "openvino" and (self.outputs == "nms" or self.dynamic_batch):
            raise ExportError(
                "--format openvino takes --outputs heads or decoded with a static batch (--outputs nms and "
                "--dynamic-batch are ONNX only)"
            )
        if self.format == "tflite":
            if self.outputs == "nms":
                raise ExportError(
                    "--outputs nms is ONNX only: TFLite has no NonMaxSuppression with per-class batched "
                    "output here; export with --outputs decoded (or heads) and run NMS outside"
                )
            if self.dynamic_batch:
                raise ExportError(
                    "--dynamic-batch is ONNX only: TFLite models have a fixed input shape (use --batch N)"
                )
        if self.format == "onnx" and self.opset is not None and self.opset < 17:
            raise ExportError(f"--opset {self.opset}: yolo4 exports ONNX opset 17 or newer")


def exported_spec(model: Darknet, img_size: tuple[int, int] | None) -> NetworkSpec:
    """A copy of the model's NetworkSpec whose [net] size is the exported input size."""
    spec = model.spec
    if img_size is None:
        return spec
    net = dataclasses.replace(spec.net, height=int(img_size[0]), width=int(img_size[1]))
    return dataclasses.replace(spec, net=net)


def input_hw(model: Darknet, options: ExportOptions) -> tuple[int, int]:
    """The exported (height, width)."""
    return tuple(options.img_size) if options.img_size is not None else model.input_hw  # type: ignore[return-value]


def preprocess_record(spec: NetworkSpec, resize: str | None = None) -> dict[str, Any]:
    """How an image becomes the input tensor (the Detector's and the calibration's rule)."""
    return {
        "resize": resize or ("letterbox" if spec.net.letter_box else "stretch"),
        "letterbox_fill": 127,
        "color": "RGB",
        "scale": "1/255 (uint8 pixel / 255 -> float in [0, 1])",
        "layout": "NCHW",
        "input_hw": [spec.net.height, spec.net.width],
        "interpolation": "cv2.INTER_LINEAR",
    }


def metadata(
    spec: NetworkSpec, names: list[str], options: ExportOptions, quantization: dict[str, Any] | None = None
) -> dict[str, str]:
    """The string metadata written into exported models (see the module docstring)."""
    from yolo4._version import __version__

    out = {
        "yolo4.version": str(__version__),
        "yolo4.outputs": options.outputs,
        "yolo4.cfg": format_cfg(spec),
        "yolo4.names": json.dumps(list(names)),
        "yolo4.preprocess": json.dumps(preprocess_record(spec)),
        "yolo4.quantization": json.dumps(quantization or "none"),
    }
    if options.outputs == "nms":
        p = options.postprocess
        out["yolo4.nms"] = json.dumps(
            {"conf": p.conf, "iou": p.iou, "nms": p.nms, "labels": p.labels, "max_det": p.max_det}
        )
    return out


def default_names(spec: NetworkSpec) -> list[str]:
    """COCO's names for 80 classes, else "0", "1", ..."""
    classes = int(spec.yolo_layers[0].classes) if spec.yolo_layers else 0
    if classes == 80:
        from yolo4.data.names import COCO_NAMES

        return list(COCO_NAMES)
    return [str(i) for i in range(classes)]


def default_out(stem: str, options: ExportOptions, folder: Path) -> Path:
    """`<folder>/<stem>[-<h>x<w>][-decoded|-nms][-int8].<ext>`."""
    parts = [stem]
    if options.img_size is not None:
        parts.append(f"{options.img_size[0]}x{options.img_size[1]}")
    if options.outputs != "heads":
        parts.append(options.outputs)
    if options.int8:
        parts.append("int8")
    return folder / ("-".join(parts) + SUFFIXES[options.format])
