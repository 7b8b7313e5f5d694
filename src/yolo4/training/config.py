"""`TrainConfig`: everything a training run needs, as one flat typed dataclass.

    cfg = TrainConfig.from_args(["lr=0.02", "mosaic=0"], base=TrainConfig(data="shapes/data.yaml"))
    cfg = TrainConfig.from_yaml("best.yaml", base=cfg)  # a mapping of fields (`yolo4 train --config`)
    cfg.to_dict()  /  TrainConfig.from_dict(d)      # primitives only: checkpoints, config.json

Unknown keys and values that do not parse raise Yolo4Error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from yolo4.errors import Yolo4Error
from yolo4.ops.nms import VAL_POSTPROCESS, PostprocessConfig

T = TypeVar("T")


def resolved(value: T | None, name: str) -> T:
    """A TrainConfig field that `training.defaults.resolve_defaults` fills in (None before): its value."""
    if value is None:
        raise Yolo4Error(f"TrainConfig.{name} is None: resolve the defaults first (training.defaults.resolve_defaults)")
    return value


def check_time_budget(minutes: float | None) -> None:
    """Raise Yolo4Error unless `minutes` (TrainConfig.time_budget_min, `--time-budget`) is None or positive."""
    if minutes is not None and minutes <= 0:
        raise Yolo4Error(f"--time-budget must be a positive number of minutes, got {minutes:g}")


@dataclass
class TrainConfig:
    """Everything a training run needs. Saved in every checkpoint (`--resume` reuses it)."""

    # what
    data: str = ""  # dataset: folder, data.yaml, darknet .data or COCO json
    model: str = "yolov4-tiny"  # zoo name or darknet .cfg path
    weights: str | None = None  # darknet .weights: full model, or a backbone prefix with weights_upto
    weights_upto: int | None = None  # load only layers 0..N-1 (yolov4.conv.137 style)
    # quantisation-aware training: fine-tune the trained `weights` (darknet .weights, or a run's best.pt)
    # with simulated int8 (NNCF; BN folded), validate the int8 model, export it (yolo4.export.qat)
    qat: bool = False
    qat_calib_images: int = 100  # train images that calibrate the int8 ranges before fine-tuning
    qat_export: str = "onnx"  # int8 files written from best.pt at the end: onnx, openvino, tflite (comma-separated)
    qat_train_ranges: bool = (
        True  # train the quantisers' ranges with the weights (NNCF's QAT); off: they stay calibrated
    )
    qat_weight_bits: int = 7  # 7: conv weights (not depthwise) in -64..63, as `yolo4 export --int8`; 8: whole range
    freeze: int = 0  # layers 0..freeze-1 are not trained (BN frozen too)
    anchors: str = "auto"  # auto (k-means when the cfg's fit the training boxes badly) | cfg | kmeans
    max_train_images: int | None = None  # use only the first N training images
    max_val_images: int | None = None  # validate each epoch on the first N val images
    cache_images: bool = True  # decode the training images once and keep them in memory (if they fit in 1/4 of RAM)
    # how long, how big
    epochs: int = 100
    batch: int = 16  # images per optimizer step over all processes (darknet batch; lr follows it)
    subdivisions: int = 1  # mini-batches per step (gradient accumulation; darknet subdivisions)
    cmbn: bool = False  # CmBN (darknet batch_normalize=2): BN statistics accumulate over a step's mini-batches
    img_size: int = 416
    multiscale: bool = False  # darknet random=1: a new input size every 10 batches, size/1.4 .. size*1.4
    small_img_size: int | None = None  # progressive resizing: the first `small_img_epochs` train at this size
    small_img_epochs: float = 0.5  # that fraction of the epochs (rounded down)
    # optimiser
    optimizer: str = "sgd"  # sgd (momentum, nesterov: the YOLOv4 recipe) | adamw (betas (momentum, 0.999))
    lr: float | None = None  # at lr_batch images per step; scaled linearly with the global batch; None: 0.01,
    # under qat 1e-5 (a fine-tune of a converged model with BN folded; training.defaults)
    lr_batch: int = 64
    momentum: float = 0.937
    nesterov: bool = True
    weight_decay: float = 5e-4  # conv weights only, not BN or biases
    policy: str = "cosine"  # steps | cosine | sgdr | constant
    burn_in: int | None = None  # optimizer steps of warm-up (lr * (step / burn_in) ** power); None: warmup_epochs
    warmup_epochs: float = 3.0  # the warm-up when burn_in is None, at most a fifth of the epochs
    burn_in_power: float | None = None  # the warm-up's curve; None: linear (1), or darknet's 4 with a burn_in given
    steps: tuple[float, ...] = (0.8, 0.9)  # policy=steps: boundaries (fractions of all steps if < 1)
    scales: tuple[float, ...] = (0.1, 0.1)
    final_lr_ratio: float = 0.01  # cosine / sgdr end value, relative to lr
    sgdr_cycle_epochs: float = 10.0
    sgdr_mult: float = 2.0
    ema: bool = True
    ema_decay: float | None = None  # the EMA's final decay (None with ema_tau None: from the run's length;
    ema_tau: float | None = None  # its ramp in steps       with one of them given: YOLOv5's 0.9999 / 2000)
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 (see autocast_dtype)
    grad_clip: float = 0.0  # max gradient norm, 0: off (the gradient sums lr_batch images: norms of 100s are normal)
    # freebies of the detector (None: the cfg's [yolo] value)
    iou_loss: str | None = None
    iou_thresh: float | None = None
    ignore_thresh: float | None = None
    label_smoothing: float | None = None
    iou_normalizer: float | None = None
    cls_normalizer: float | None = None
    obj_normalizer: float | None = None
    scale_x_y: float | None = None
    neighbor_cells: bool | None = None  # 3 cells per truth and anchor (Scaled-YOLOv4; with scale_x_y=2);
    # None: on for heads trained anew (scale_x_y then 2 unless given), off for heads loaded from weights
    iou_objectness: bool = True  # objectness target = the prediction's IoU with its truth (YOLOv5), not 1
    # freebies of the backbone / data
    dropblock: bool = True  # ramp the [dropout] layers' rate up over the first half of training
    sat_eps: float = 0.0  # self-adversarial training: FGSM step on the input first (0: off)
    mosaic: float = 1.0
    mixup: float = 0.0
    cutmix: float = 0.0
    flip: float = 0.5
    jitter: float = 0.3
    scale_min: float = 0.5
    scale_max: float = 1.5
    hue: float = 0.015
    saturation: float = 1.5
    exposure: float = 1.5
    close_mosaic: int | None = None  # turn mosaic/mixup/cutmix off for the last N epochs (None: a fifth of them)
    time_budget_min: float | None = (
        None  # after every epoch, re-plan `epochs` (at most the given) to fit this many minutes
    )
    # validation
    val_every: int = 1
    patience: int = 50  # stop after this many epochs without a better mAP50-95 (fitness); 0: never
    val_img_size: int | None = None  # input size of validation, precise BN and best.cfg (None: img_size);
    # a larger one than the training size finds more small objects (as darknet users infer at 608 after 416)
    precise_bn_batches: int = 8  # recompute the evaluated model's BN statistics on this many train batches first
    val_conf: float = VAL_POSTPROCESS.conf  # validation post-processing: VAL_POSTPROCESS with these two
    val_iou: float = VAL_POSTPROCESS.iou
    # run
    out: str = "runs/train"
    resume: str | None = None  # a run folder: continue from its last.pt
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int | None = None  # loader processes (None: 0 on CPUs of <= 4 cores, else cores / 4)
    seed: int = 0
    export: bool = True  # write best.cfg + best.weights at the end
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: leave PyTorch's default)

    @property
    def val_postprocess(self) -> PostprocessConfig:
        """The post-processing of validation passes: `yolo4 val`'s defaults with val_conf and val_iou."""
        return VAL_POSTPROCESS.replace(conf=self.val_conf, iou=self.val_iou)

    @classmethod
    def from_args(cls, items: Sequence[str], base: TrainConfig | None = None) -> TrainConfig:
        """`["lr=0.02", "mosaic=0", "steps=0.7,0.9"]` applied to `base` (default: defaults).
        Unknown keys and values that do not parse raise Yolo4Error."""
        types = {f.name: f.type for f in fields(cls)}
        out = dataclasses.replace(base) if base is not None else cls()
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types:
                raise Yolo4Error(f"train option '{item}': expected KEY=VALUE with KEY one of {', '.join(types)}")
            setattr(out, key, _parse(types[key], text.strip(), key))
        return out

    @classmethod
    def parse_value(cls, key: str, value: Any) -> Any:
        """`value` (text, or a YAML scalar or list) as field `key`'s type: `parse_value("lr", "0.02")`
        is 0.02. Unknown keys and values that do not parse raise Yolo4Error."""
        return getattr(cls.from_args([f"{key}={_as_text(value)}"]), key.strip().replace("-", "_"))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, base: TrainConfig | None = None) -> TrainConfig:
        """A YAML mapping of fields (`lr: 0.02`, `steps: [0.7, 0.9]`; what `yolo4 tune` writes as
        best.yaml) applied to `base` like `from_args`. Errors name the file."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise Yolo4Error(f"{path}: cannot read the training config ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            raise Yolo4Error(f"{path}: not valid YAML ({e})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise Yolo4Error(
                f"{path}: expected a mapping of TrainConfig fields (KEY: VALUE), got {type(data).__name__}"
            )
        try:
            return cls.from_args([f"{k}={_as_text(v)}" for k, v in data.items()], base=base)
        except Yolo4Error as e:
            raise Yolo4Error(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (for checkpoints and JSON)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)


def _as_text(value: Any) -> str:
    """A YAML value as `from_args` text: None -> none, a list -> comma-separated."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _parse(type_text: Any, text: str, key: str) -> Any:
    t = str(type_text)
    try:
        if text.lower() in ("none", "null") and "None" in t:
            return None
        if t.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if t.startswith("tuple"):
            return tuple(float(v) for v in text.split(",") if v.strip())
        if t.startswith("int"):
            return int(text)
        if t.startswith("float"):
            return float(text)
        return text
    except ValueError:
        raise Yolo4Error(f"train option {key}={text!r}: not a valid {t}") from None
