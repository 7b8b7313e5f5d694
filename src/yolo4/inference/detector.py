"""Inference: pre-processing, the `Detector` and its results (the `yolo4 detect` run over
files, folders, videos and webcams is `yolo4.inference.detect`).

    det = Detector("yolov4.cfg", "yolov4.weights", names="coco.names")     # or yolo4.load(...)
    [res] = det(["dog.jpg"])          # paths, RGB uint8 arrays or PIL images
    res.boxes, res.scores, res.class_ids, res.labels   # xyxy in the image's pixels
    cv2.imwrite("out.jpg", res.draw()[..., ::-1])

Stages, each timed per image: pre-process (resize to the network input: `stretch`, darknet's
default, or `letterbox`, from the cfg's `letter_box`; RGB; / 255), network (one replaceable
callable, `Detector.runner`), post-process (decode the [yolo] heads, confidence filter,
NMS, map the boxes back to the original image's pixels). How the network runs (precision,
BatchNorm folding, channels_last, torch.compile, asynchronous upload, batched NMS) is one
`yolo4.inference.fastpath.SpeedConfig`: the fast path on CUDA, plain eager PyTorch elsewhere.
On the fast path the stages do not synchronise with the GPU: the network is timed with CUDA
events and `finish` is the one place that waits for it. They are three methods,
`prepare`, `forward` and `finish`, passing a `Batch` along, so that a video pipeline
(`yolo4.inference.pipeline`) can run each in its own thread; `predict_batch` chains them.

The runner contract, for other back-ends (ONNX Runtime, TFLite): called with a float
Tensor[B, 3, H, W] in [0, 1], RGB, on the detector's device, it returns either the raw
head tensors, one (B, A*(5+C), H_i, W_i) per [yolo] layer in cfg order (a list of
Tensors or numpy arrays), or an already-decoded `yolo4.ops.boxes.DecodedHeads`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from yolo4.data.names import COCO_NAMES, read_names
from yolo4.data.sources import ImageLike, as_rgb_array, load_image
from yolo4.errors import DataError, WeightsError, Yolo4Error
from yolo4.inference.device import select_device
from yolo4.inference.fastpath import EAGER, FastNetwork, SpeedConfig, upload
from yolo4.inference.preprocess import RESIZERS, ResizeInfo
from yolo4.ops.boxes import DecodedHeads, decode_heads
from yolo4.ops.nms import DETECT_POSTPROCESS, PostprocessConfig, batched_postprocess, postprocess

if TYPE_CHECKING:
    from yolo4.darknet.layers import NetworkSpec

NO_WEIGHTS_MESSAGE = (
    "no weights given, and yolo4 will not draw boxes from an untrained network. Either\n"
    "  * download official darknet weights: they are published with the AlexeyAB/darknet releases,\n"
    "    https://github.com/AlexeyAB/darknet/releases (yolov4.weights for cfg/yolov4.cfg,\n"
    "    yolov4-tiny.weights for cfg/yolov4-tiny.cfg, yolov4-csp / yolov4x-mish likewise), and pass\n"
    "    them with --weights FILE together with the matching --model CFG; or\n"
    "  * train your own with `yolo4 train` (`yolo4 train --demo` trains a small model on the embedded\n"
    "    shapes dataset); it ends by writing best.cfg + best.weights in its run folder: pass them\n"
    "    with --model and --weights (and --names for your classes)."
)

Runner = Callable[[Tensor], Sequence[Tensor] | Sequence[np.ndarray] | DecodedHeads]
STAGES = ("preprocess", "network", "postprocess")


# ================================================================== results
@dataclass
class Detections:
    """The detections of one image, in that image's pixels.

    boxes: float32 (N, 4) xyxy; scores: float32 (N,); class_ids: int64 (N,); names: the
    class-name table indexed by class id; image_hw: (height, width); path: where the image
    came from (None for arrays; "video.mp4#frame=12" for video frames); timings: ms per
    stage for this image ("preprocess", "network", "postprocess").
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: Sequence[str]
    image_hw: tuple[int, int]
    path: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labels(self) -> list[str]:
        """The class name of each detection."""
        return [self.names[c] if 0 <= c < len(self.names) else str(c) for c in self.class_ids.tolist()]

    def draw(self, image: np.ndarray | None = None) -> np.ndarray:
        """The image (RGB uint8 (H, W, 3)) with labelled boxes; the stored image unless one is given."""
        if image is None:
            image = self.image if self.image is not None else (load_image(self.path) if self.path else None)
        if image is None:
            raise DataError("Detections.draw: no image stored and no path to read it from")
        from yolo4.viz.draw import draw_boxes

        return draw_boxes(image, self.boxes, self.class_ids, self.scores, self.names)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: `{"image", "width", "height",
        "detections": [{"class_id", "class_name", "score", "box": [x1, y1, x2, y2]}]}`."""
        return {
            "image": self.path,
            "width": int(self.image_hw[1]),
            "height": int(self.image_hw[0]),
            "detections": [
                {
                    "class_id": int(c),
                    "class_name": name,
                    "score": round(float(s), 5),
                    "box": [round(float(v), 2) for v in box],
                }
                for c, name, s, box in zip(self.class_ids.tolist(), self.labels, self.scores, self.boxes)
            ],
        }


@dataclass
class Batch:
    """A batch on its way through the three stages of `Detector` (prepare -> forward -> finish).

    images: the RGB uint8 inputs (H_i, W_i, 3); paths: their names (or None); x: the network
    input Tensor[B, 3, H, W]; infos: one ResizeInfo per image; raw: the runner's output once
    forwarded; ms: wall milliseconds of each stage done so far, for the whole batch.
    """

    images: list[np.ndarray]
    paths: list[str | None]
    x: Tensor
    infos: list[ResizeInfo]
    raw: Any = None
    ms: dict[str, float] = field(default_factory=dict)
    events: tuple[Any, Any] | None = None  # (start, end) CUDA events of the network, on the fast path


# ================================================================== the detector
def _resolve_spec(model: str | os.PathLike):
    """A NetworkSpec from a zoo name (yolov4, yolov4-tiny, ...) or a .cfg path."""
    from yolo4.models.zoo import resolve_spec

    return resolve_spec(model)


def _to_size(img_size: int | Sequence[int] | None, default_hw: tuple[int, int]) -> tuple[int, int]:
    if img_size is None:
        return default_hw
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = (int(v) for v in img_size)
    return h, w


class Detector:
    """Images in, `Detections` out.

    Args:
        model_or_cfg: a darknet .cfg path (or zoo name), or an already-built module with
            `yolo_layers` and `spec` (a `yolo4.darknet.Darknet`).
        weights: darknet .weights for a cfg. Required for a cfg unless `runner` is given.
        names: class names (a list or a .names file); default COCO's for 80 classes, else ids.
        img_size: network input, an int or (height, width); default the cfg's width/height.
        resize: "stretch" or "letterbox"; default the cfg's `letter_box`.
        postprocess: conf, iou, NMS kind, labels rule, max_det (`yolo4.ops.nms.PostprocessConfig`;
            default `DETECT_POSTPROCESS`: conf 0.25, greedy NMS 0.45, best class per box).
            DIoU-NMS takes its beta from the cfg's `beta_nms`.
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N" or a torch.device.
        runner: replaces the network call (see the module docstring); the module is then not built.
        speed: how the network runs (`yolo4.inference.fastpath.SpeedConfig`); default
            `SpeedConfig.for_device(device)`: FAST_CUDA on CUDA, FAST_CPU on the CPU. A runner or an
            exported model always gets float32 input and EAGER's settings, bar batched NMS.
    """

    def __init__(
        self,
        model_or_cfg: nn.Module | str | os.PathLike,
        weights: str | os.PathLike | None = None,
        names: Sequence[str] | str | os.PathLike | None = None,
        img_size: int | Sequence[int] | None = None,
        resize: str | None = None,
        postprocess: PostprocessConfig = DETECT_POSTPROCESS,
        device: str | torch.device = "auto",
        runner: Runner | None = None,
        speed: SpeedConfig | None = None,
    ):
        if not isinstance(postprocess, PostprocessConfig):
            raise Yolo4Error(f"postprocess must be a PostprocessConfig, not {type(postprocess).__name__}")
        if resize is not None and resize not in RESIZERS:
            raise Yolo4Error(f"unknown resize '{resize}' (choose from {', '.join(RESIZERS)})")
        if speed is not None and not isinstance(speed, SpeedConfig):
            raise Yolo4Error(f"speed must be a SpeedConfig, not {type(speed).__name__}")
        self.device = select_device(device)
        self.model: nn.Module | None = None
        owned = False  # a module loaded here may be folded and cast in place
        if isinstance(model_or_cfg, nn.Module):
            if not hasattr(model_or_cfg, "spec"):
                raise Yolo4Error(
                    f"a {type(model_or_cfg).__name__} has no `spec`: Detector needs a "
                    "yolo4.darknet.Darknet (or a module with its `spec` and forward contract)"
                )
            self.model = model_or_cfg
            spec = cast("NetworkSpec", model_or_cfg.spec)
        else:
            spec = _resolve_spec(model_or_cfg)
            if runner is None:
                if weights is None:
                    raise WeightsError(NO_WEIGHTS_MESSAGE)
                from yolo4.darknet import load

                self.model, owned = load(spec, weights), True
        from yolo4.darknet.network import Darknet

        speed = (speed or SpeedConfig.for_device(self.device)).on(self.device)
        self.network: FastNetwork | None = None
        if isinstance(self.model, Darknet) and runner is None:
            self.network = FastNetwork(self.model, speed, self.device, owned=owned)
            self.model = self.network.module if owned else self.model.to(self.device).eval()
        else:  # a runner or an exported model: float32 input, as the runner contract says
            speed = EAGER.replace(batched_nms=speed.batched_nms)
            if self.model is not None:
                self.model = self.model.to(self.device).eval()
        self.speed = speed
        self.spec = spec
        self.yolo_layers = list(spec.yolo_layers)
        if not self.yolo_layers:
            raise Yolo4Error(f"{spec.source}: the network has no [yolo] layer, nothing to detect with")
        self.num_classes = int(self.yolo_layers[0].classes)
        self.names = self._names(names)
        self.input_hw = _to_size(img_size, (spec.net.height, spec.net.width))
        if min(self.input_hw) <= 0 or self.input_hw[0] % 32 or self.input_hw[1] % 32:
            raise Yolo4Error(f"image size {self.input_hw} must be positive multiples of 32")
        self.resize = resize or ("letterbox" if spec.net.letter_box else "stretch")
        self.postprocess = postprocess
        self.beta_nms = float(self.yolo_layers[-1].beta_nms)
        self.runner: Runner = runner if runner is not None else (self.network or self._run_module)

    def _names(self, names: Sequence[str] | str | os.PathLike | None) -> list[str]:
        if names is None:
            return list(COCO_NAMES) if self.num_classes == 80 else [str(i) for i in range(self.num_classes)]
        table = read_names(names) if isinstance(names, (str, os.PathLike)) else [str(n) for n in names]
        if len(table) != self.num_classes:
            where = f"{names}: " if isinstance(names, (str, os.PathLike)) else ""
            raise DataError(f"{where}{len(table)} class names but the model has {self.num_classes} classes")
        return table

    @torch.inference_mode()
    def _run_module(self, x: Tensor) -> list[Tensor]:
        assert self.model is not None
        return self.model(x)

    def _sync(self) -> None:
        if self.device.type == "cuda" and not self.speed.async_upload:
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def _decode(self, out: Sequence[Tensor] | Sequence[np.ndarray] | DecodedHeads) -> DecodedHeads:
        if isinstance(out, DecodedHeads):
            return DecodedHeads(*(torch.as_tensor(t, device=self.device) for t in out))
        heads = [torch.as_tensor(t, device=self.device) for t in out]
        return decode_heads(heads, self.yolo_layers, self.input_hw)

    def warmup(self, batch: int = 1) -> None:
        """One untimed pass on `batch` blank images, so that the first timed batch does not pay
        for lazy initialisation (kernel selection, allocator growth, CUDA context, the compile
        for that batch size)."""
        self.predict_batch([np.zeros((*self.input_hw, 3), np.uint8)] * batch)

    def prepare(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> Batch:
        """Stage 1, pre-processing: RGB uint8 arrays (H_i, W_i, 3) -> a Batch holding the network
        input Tensor[B, 3, H, W] and one ResizeInfo per image."""
        paths = list(paths) if paths is not None else [None] * len(images)
        t0 = time.perf_counter()
        resize = RESIZERS[self.resize]
        done = [resize(img, self.input_hw) for img in images]
        x = upload([d[0] for d in done], self.device, self.speed)  # (B, 3, H, W) in [0, 1]
        self._sync()
        batch = Batch(list(images), paths, x, [d[1] for d in done])
        batch.ms["preprocess"] = (time.perf_counter() - t0) * 1e3
        return batch

    def forward(self, batch: Batch) -> Batch:
        """Stage 2, the network: fills `batch.raw` with the runner's output (see the module docstring)."""
        t0 = time.perf_counter()
        if self.speed.async_upload and self.device.type == "cuda":  # timed on the GPU, no waiting here
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            batch.raw = self.runner(batch.x)
            end.record()
            batch.events = (start, end)
            return batch
        batch.raw = self.runner(batch.x)
        self._sync()
        batch.ms["network"] = (time.perf_counter() - t0) * 1e3
        return batch

    def finish(self, batch: Batch) -> list[Detections]:
        """Stage 3, post-processing: decode, confidence filter, NMS, boxes back to each image's
        pixels. Returns one Detections per image, each with the batch's per-image stage times."""
        if batch.events is not None:  # the network's end on the GPU is where this stage starts
            start, end = batch.events
            end.synchronize()
            batch.ms["network"] = float(start.elapsed_time(end))
        t0 = time.perf_counter()
        nms = batched_postprocess if self.speed.batched_nms else postprocess
        with torch.inference_mode():
            dec = self._decode(batch.raw)
            kept = nms(*dec, self.postprocess, beta=self.beta_nms)
            # one copy to the host for the whole batch: (K, 6) boxes, score, class id
            packed = torch.cat(
                [torch.cat([k.boxes.float(), k.scores.float()[:, None], k.class_ids[:, None].float()], 1) for k in kept]
            )
            rows = packed.cpu().split([len(k.scores) for k in kept])
            results = []
            for img, path, info, r in zip(batch.images, batch.paths, batch.infos, rows):
                results.append(
                    Detections(
                        boxes=info.to_original(r[:, :4]).numpy().astype(np.float32),
                        scores=np.ascontiguousarray(r[:, 4].numpy()),
                        class_ids=r[:, 5].numpy().astype(np.int64),
                        names=self.names,
                        image_hw=info.orig_hw,
                        path=path,
                        image=img,
                    )
                )
        self._sync()
        batch.ms["postprocess"] = (time.perf_counter() - t0) * 1e3
        n = len(batch.images)
        for r in results:
            r.timings = {k: batch.ms.get(k, 0.0) / n for k in STAGES}
        return results

    def predict_batch(
        self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None
    ) -> list[Detections]:
        """One batch of RGB uint8 arrays (H_i, W_i, 3) -> one Detections per image
        (`finish(forward(prepare(images)))`; a video pipeline runs the three in separate threads)."""
        if not len(images):
            return []
        return self.finish(self.forward(self.prepare(images, paths)))

    def __call__(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 16) -> list[Detections]:
        """Detect objects in paths, RGB numpy arrays or PIL images (one or a list).

        Returns:
            one Detections per image, in order. A path that cannot be read raises DataError.
        """
        if isinstance(images, (str, os.PathLike, np.ndarray)) or hasattr(images, "convert"):
            images = [images]
        items = list(images)
        out: list[Detections] = []
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            arrays = [as_rgb_array(im) for im in chunk]
            paths = [str(im) if isinstance(im, (str, os.PathLike)) else None for im in chunk]
            out.extend(self.predict_batch(arrays, paths))
        return out


def build_detector(
    model: str | os.PathLike | nn.Module | None,
    weights: str | os.PathLike | None = None,
    names: str | os.PathLike | Sequence[str] | None = None,
    img_size: int | None = None,
    resize: str | None = None,
    runtime: str = "auto",
    **kw: Any,
) -> Detector:
    """The Detector for `--model M [--weights W]`: M is a zoo name or darknet .cfg (with W, darknet
    .weights), an exported .onnx / .tflite file (its cfg, names, input size and resize rule come
    from the file's metadata; no W), or a built `Darknet` module. No weights for a darknet model
    -> WeightsError with where to get them. `runtime` runs an exported file: "auto" (the fastest
    installed, said on stderr) or one of `yolo4.inference.runtime.RUNTIMES`; darknet models run in
    "pytorch" (`resolve_runtime`). `kw` goes to Detector (postprocess, device, runner).

    An exported file given as `weights` (the old `--cfg C --weights FILE.onnx` spelling) is
    still accepted and used on its own."""
    from yolo4.inference.runtime import is_exported, load_exported, resolve_runtime

    if weights is None and is_exported(model):  # `--model FILE.onnx|.tflite` names the exported file itself
        model, weights = None, model
    if weights is not None and is_exported(weights):
        net = load_exported(weights, runtime=resolve_runtime(weights, runtime, announce=True))
        if img_size is not None and (img_size, img_size) != tuple(net.input_hw):
            raise Yolo4Error(f"{weights}: exported at {net.input_hw[1]}x{net.input_hw[0]}, not --img-size {img_size}")
        return Detector(net, names=names if names is not None else net.names, resize=resize or net.resize, **kw)
    if model is None:
        raise Yolo4Error(
            "no model: give --model with a zoo name (yolov4, yolov4-tiny, ...), a darknet .cfg file "
            "(with --weights) or an exported .onnx / .tflite file"
        )
    if weights is None and kw.get("runner") is None and not isinstance(model, nn.Module):
        raise WeightsError(NO_WEIGHTS_MESSAGE)
    resolve_runtime(model, runtime)  # a darknet model runs in pytorch: refuse any other runtime by name
    return Detector(model, weights, names=names, img_size=img_size, resize=resize, **kw)
