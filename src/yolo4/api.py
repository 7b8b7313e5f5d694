"""The public Python API: one function per `yolo4` command, and the objects they take and return.

    import yolo4

    detector = yolo4.load("yolov4.cfg", "yolov4.weights")     # or "yolov4-tiny", or "model.onnx"
    [dets] = detector("dog.jpg")                              # yolo4.Detections, boxes in the image's pixels
    yolo4.detect(["photos/"], model="model.onnx", out="runs/detect")
    yolo4.detect(["4k/"], model="model.onnx", tile=yolo4.TileConfig(size=416))          # small objects
    yolo4.detect_dataset(["archive/"], model="model.onnx", out="results/")             # Ray: many machines
    yolo4.track("street.mp4", model="model.onnx", out="runs/track")                    # ByteTrack ids
    result = yolo4.train("data.yaml", model="yolov4-tiny", epochs=100, lr=0.02)
    search = yolo4.tune("data.yaml", model="yolov4-tiny", trials=30, epochs_per_trial=10)  # -> best.yaml
    [metrics] = yolo4.val("data.yaml", model=result.best_cfg, weights=result.best_weights)
    yolo4.export(result.best_cfg, result.best_weights, format="onnx", outputs="decoded")
    print(yolo4.benchmark("yolov4-tiny", img_size=416).summary())
    yolo4.info("yolov4")

Every `yolo4 COMMAND` calls the function of the same name here, and the keyword arguments carry
the options' names: `--model` model, `--weights` weights, `--out` out, `--json` json_path,
`--device` device ("auto": CUDA when PyTorch sees a GPU), `--runtime` runtime ("auto": the fastest
installed runtime for an exported file), and `--conf --iou --nms --labels --max-det` together as one
`postprocess=PostprocessConfig(...)` (presets DETECT_POSTPROCESS for detect/benchmark/export,
VAL_POSTPROCESS for val), and `--half --compile --no-fuse --eager` as one `speed=SpeedConfig(...)`
(presets FAST_CPU, the CPU's default, FAST_CUDA, CUDA's, and EAGER, plain PyTorch; e.g.
`speed=yolo4.FAST_CPU.replace(precision="bf16")` for `--half` on a CPU).

A model is named the same way everywhere: a zoo name (`yolov4`, `yolov4-tiny`, ...) or a
darknet `.cfg` path, with darknet `weights`; or an exported `.onnx` / `.tflite` file, which
carries its own cfg, class names and pre-processing.

`import yolo4` stays light: these names are imported on first use (`yolo4.__getattr__`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

from yolo4 import _API
from yolo4.errors import Yolo4Error
from yolo4.evaluation.evaluate import run_val as val
from yolo4.export import ExportOptions
from yolo4.export.run import ExportResult
from yolo4.export.run import run_export as export
from yolo4.inference.benchmark import BenchResult
from yolo4.inference.benchmark import benchmark as benchmark
from yolo4.inference.cluster import DatasetSummary, RayConfig
from yolo4.inference.cluster import detect_dataset as detect_dataset
from yolo4.inference.detect import DetectSummary
from yolo4.inference.detect import run_detect as detect
from yolo4.inference.detector import Detections, Detector, build_detector
from yolo4.inference.speed import EAGER, FAST_CPU, FAST_CUDA, SpeedConfig
from yolo4.inference.tiles import TileConfig
from yolo4.inference.track import TrackConfig, TrackSummary
from yolo4.inference.track import run_track as track
from yolo4.models.summary import ModelInfo, print_info
from yolo4.ops.nms_config import DETECT_POSTPROCESS, TRACK_POSTPROCESS, VAL_POSTPROCESS, PostprocessConfig
from yolo4.training.anchors import AnchorReport
from yolo4.training.anchors import run_anchors as anchors
from yolo4.training.config import TrainConfig
from yolo4.training.run import run_train as train
from yolo4.training.train import TrainResult
from yolo4.tuning.run import TuneResult, TuneSettings
from yolo4.tuning.run import run_tune as tune

__all__ = list(_API)  # the one list of public names: yolo4/__init__.py, which resolves them lazily


def load(
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    names: str | os.PathLike | Sequence[str] | None = None,
    img_size: int | None = None,
    resize: str | None = None,
    postprocess: PostprocessConfig = DETECT_POSTPROCESS,
    device: str = "auto",
    runtime: str = "auto",
    speed: SpeedConfig | None = None,
) -> Detector:
    """A ready `Detector`: images in, `Detections` out (what `yolo4 detect` runs).

    Args:
        model: a zoo name or darknet .cfg (then `weights`: its darknet .weights), or an exported
            .onnx / .tflite file (cfg, class names, input size and resize rule from its metadata).
        names: class names (a list or a .names file); default the file's, COCO's for 80
            classes, else the class numbers.
        img_size: network input side (default the cfg's; an exported file's is fixed).
        resize: "stretch" or "letterbox" (default the cfg's `letter_box`, or the export's rule).
        postprocess: conf, iou, NMS kind, labels rule, max_det (default DETECT_POSTPROCESS).
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N".
        runtime: what runs an exported file: "auto" (the fastest installed here, said on stderr),
            "onnxruntime", "openvino", "tflite" or "opencv"; a darknet model runs in "pytorch".
        speed: how PyTorch runs a darknet model (default the device's: FAST_CPU on a CPU,
            BatchNorm folded + NHWC in fp32, FAST_CUDA on CUDA); see `SpeedConfig`.
    Returns:
        Detector; `detector(images)` takes paths, RGB uint8 arrays (H, W, 3) or PIL images and
        returns one Detections per image: boxes float32 (N, 4) xyxy in that image's pixels,
        scores float32 (N,), class_ids int64 (N,), labels, draw(), to_dict().
    Raises:
        WeightsError for a darknet model without weights (with where to get them); Yolo4Error
        subclasses naming the file for anything unreadable.
    """
    return build_detector(
        model, weights, names, img_size, resize, runtime=runtime, postprocess=postprocess, device=device, speed=speed
    )


def info(
    model: str | os.PathLike,
    *,
    img_size: int | None = None,
    num_classes: int | None = None,
    peak_tflops: float = 14.0,
    file: TextIO | None = None,
) -> ModelInfo:
    """`yolo4 info`: print the darknet-style layer table, darknet's "Total BFLOPS", the trainable
    params and darknet's rule-of-thumb FPS at `peak_tflops`; return those figures.

    Args:
        model: a zoo name, a darknet .cfg, or an exported .onnx / .tflite (the cfg it carries).
        img_size: input side (default the [net] size; an exported file's is fixed).
        num_classes: classes (default 80 for zoo models, a cfg's own; not for exported files).
        file: where to print (default stdout).
    """
    from yolo4.inference.runtime import is_exported, load_exported

    if not is_exported(model):
        return print_info(model, img_size=img_size, num_classes=num_classes, peak_tflops=peak_tflops, file=file)
    spec = load_exported(model).spec
    h, w = spec.net.height, spec.net.width
    if img_size is not None and (img_size, img_size) != (h, w):
        raise Yolo4Error(f"{model}: exported at {w}x{h}, not --img-size {img_size}")
    classes = int(spec.yolo_layers[0].classes) if spec.yolo_layers else 0
    if num_classes is not None and num_classes != classes:
        raise Yolo4Error(f"{model}: exported with {classes} classes, not --classes {num_classes}")
    return print_info(spec, peak_tflops=peak_tflops, file=file or sys.stdout)
