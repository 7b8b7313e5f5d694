"""Training: the YOLOv4 recipe as a plain loop with hooks.

    cfg = TrainConfig(data="shapes/data.yaml", model="yolov4-tiny", epochs=30, batch=32, img_size=256)
    result = train(cfg)                       # runs/train: last.pt, best.pt, results.csv, plots
    train(TrainConfig(resume="runs/train"))   # continue exactly where last.pt stopped

One `TrainConfig` (flat, typed, `from_args(["lr=0.02"])` overrides) decides everything;
`train` turns it into objects in one place and runs the loop:

    for epoch (input size: small_img_size for the first epochs if set, then img_size):
      for mini-batch:
        [random shape] -> [self-adversarial pass] -> forward (AMP) -> YoloLoss
        -> non-finite? skip + report -> backward (accumulated over `subdivisions`)
        -> SGD step with the scheduled lr -> EMA update
    -> precise BN + validation of the EMA model (mAP50, mAP50-95) -> results.csv/TensorBoard/plots
    -> last.pt (+ best.pt), written atomically
    end: best weights exported as darknet .cfg + .weights

Hooks are objects with any of `on_start(state)`, `after_step(state)`, `after_epoch(state)`,
`on_end(state)`; the loop calls them with the live `TrainState`.

Batch semantics follow darknet: `batch` images per optimizer step over all processes,
`subdivisions` mini-batches per step (gradient accumulation). The gradient is `lr_batch`
times the mean over the global batch (the sum over `lr_batch` images, as in the usual PyTorch
YOLO recipes where lr 0.01 goes with batch 64) and the learning rate follows the global batch
(`lr * batch / lr_batch`, the linear scaling rule). BatchNorm uses each mini-batch's statistics,
or with `cmbn=True` (CmBN, darknet's batch_normalize=2) those of the step's mini-batches so far.
With `sat_eps` the attack's forward pass counts as one of those mini-batches.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolo4.darknet.cmbn import reset_cmbn
from yolo4.engine.checkpoint import load_latest, rng_state, save_checkpoint, set_rng_state
from yolo4.engine.distributed import (DistInfo, all_reduce_mean, any_true, barrier, broadcast_object, cleanup,
                                      init_distributed, wrap_model)
from yolo4.engine.ema import ModelEMA, unwrap
from yolo4.engine.schedule import ScheduleConfig, lr_at
from yolo4.errors import Yolo4Error
from yolo4.ops.losses import LossOverrides, YoloLoss

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ configuration
@dataclass
class TrainConfig:
    """Everything a training run needs. Saved in every checkpoint (`--resume` reuses it)."""

    # what
    data: str = ""  # dataset: folder, data.yaml, darknet .data or COCO json
    model: str = "yolov4-tiny"  # zoo name or darknet .cfg path
    weights: str | None = None  # darknet .weights: full model, or a backbone prefix with weights_upto
    weights_upto: int | None = None  # load only layers 0..N-1 (yolov4.conv.137 style)
    freeze: int = 0  # layers 0..freeze-1 are not trained (BN frozen too)
    anchors: str = "cfg"  # "cfg" or "kmeans" (IoU k-means on the training boxes at img_size)
    max_train_images: int | None = None  # use only the first N training images
    max_val_images: int | None = None  # validate each epoch on the first N val images
    cache_images: bool = False  # decode the training images once and keep them in memory (if they fit in 1/4 of RAM)
    # how long, how big
    epochs: int = 100
    batch: int = 64  # images per optimizer step over all processes (darknet batch)
    subdivisions: int = 1  # mini-batches per step (gradient accumulation; darknet subdivisions)
    cmbn: bool = False  # CmBN (darknet batch_normalize=2): BN statistics accumulate over a step's mini-batches
    img_size: int = 416
    multiscale: bool = False  # darknet random=1: a new input size every 10 batches, size/1.4 .. size*1.4
    small_img_size: int | None = None  # progressive resizing: the first `small_img_epochs` train at this size
    small_img_epochs: float = 0.5  # that fraction of the epochs (rounded down)
    # optimiser
    optimizer: str = "sgd"  # sgd (momentum, nesterov: the YOLOv4 recipe) | adamw (betas (momentum, 0.999))
    lr: float = 0.01  # at lr_batch images per step; scaled linearly with the global batch
    lr_batch: int = 64
    momentum: float = 0.937
    nesterov: bool = True
    weight_decay: float = 5e-4  # conv weights only, not BN or biases
    policy: str = "cosine"  # steps | cosine | sgdr | constant
    burn_in: int = 1000  # optimizer steps of darknet warm-up (lr * (step / burn_in) ** 4)
    steps: tuple[float, ...] = (0.8, 0.9)  # policy=steps: boundaries (fractions of all steps if < 1)
    scales: tuple[float, ...] = (0.1, 0.1)
    final_lr_ratio: float = 0.01  # cosine / sgdr end value, relative to lr
    sgdr_cycle_epochs: float = 10.0
    sgdr_mult: float = 2.0
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
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
    neighbor_cells: bool = False  # Scaled-YOLOv4 style: 3 cells per truth and anchor (use with scale_x_y=2)
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
    close_mosaic: int = 0  # turn mosaic/mixup/cutmix off for the last N epochs
    time_budget_min: float | None = None  # after every epoch, re-plan `epochs` (at most the given) to fit this many minutes
    # validation
    val_every: int = 1
    val_img_size: int | None = None  # input size of validation, precise BN and best.cfg (None: img_size);
    # a larger one than the training size finds more small objects (as darknet users infer at 608 after 416)
    precise_bn_batches: int = 8  # recompute the evaluated model's BN statistics on this many train batches first
    val_conf: float = 0.001
    val_iou: float = 0.6
    # run
    out: str = "runs/train"
    resume: str | None = None  # a run folder: continue from its last.pt
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 2
    seed: int = 0
    export: bool = True  # write best.cfg + best.weights at the end
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: leave PyTorch's default)

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

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (for checkpoints and JSON)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)


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


# ------------------------------------------------------------------ state and result
@dataclass
class TrainState:
    """What the loop and its hooks share."""

    cfg: TrainConfig
    out_dir: Path
    model: nn.Module  # possibly DDP-wrapped; `unwrap(model)` is the Darknet
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scaler: Any
    device: torch.device
    dist: DistInfo
    names: list[str]
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    total_steps: int = 1
    best_fitness: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    nan_skipped: int = 0
    last_loss: float = math.nan
    loss_fn: YoloLoss | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    base_lr: float = 0.01  # lr at the global batch (cfg.lr * batch / lr_batch)
    bn_batches: Any = None  # () -> iterable of un-augmented training images for precise BN


@dataclass
class TrainResult:
    """Where a finished run left its files and its best numbers."""

    out_dir: Path
    best_map50: float
    best_map: float
    epochs: int
    history: list[dict[str, float]]
    best_cfg: Path | None = None
    best_weights: Path | None = None


# ------------------------------------------------------------------ building blocks
def select_device(name: str) -> torch.device:
    """`auto` -> cuda (this process's LOCAL_RANK under torchrun) if available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Yolo4Error("--device cuda was asked for but PyTorch sees no CUDA device (use --device cpu)")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def kmeans_anchors(wh: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> list[tuple[float, float]]:
    """darknet `calc_anchors`: k-means of box sizes with 1 - IoU as the distance.

    Args:
        wh: (N, 2) box widths and heights in input pixels.
    Returns:
        k (w, h) anchors sorted by area.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    if len(wh) < k:
        raise Yolo4Error(f"k-means anchors: {len(wh)} boxes for {k} anchors")
    centres = wh[rng.choice(len(wh), k, replace=False)]
    for _ in range(iters):
        inter = np.minimum(wh[:, None], centres[None]).prod(-1)
        iou = inter / (wh.prod(-1)[:, None] + centres.prod(-1)[None] - inter)
        assign = iou.argmax(1)
        new = np.array([np.median(wh[assign == j], 0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    centres = centres[np.argsort(centres.prod(-1))]
    return [(float(round(w, 1)), float(round(h, 1))) for w, h in centres]


def set_kmeans_anchors(spec, train_wh: np.ndarray, img_size: int, seed: int = 0) -> None:
    """Refit the anchors of every [yolo] layer of `spec` (in place) to the training boxes.

    As many anchors are fitted as the heads use in all, and every one is used: the finest grid
    gets the smallest ones (darknet's advice when anchors are recalculated). This also retires
    yolov4-tiny's unused anchor 0 (its official masks are 3,4,5 and 1,2,3).

    Args:
        train_wh: (N, 2) box widths and heights in input pixels at `img_size`.
    """
    from yolo4.darknet import infer_shapes
    from yolo4.darknet.layers import YoloLayer

    heads = [i for i, layer in enumerate(spec.layers) if isinstance(layer, YoloLayer)]
    shapes = infer_shapes(spec, (img_size, img_size))
    by_fineness = sorted(heads, key=lambda i: -shapes[i].out_chw[1] * shapes[i].out_chw[2])
    anchors = kmeans_anchors(train_wh, sum(len(spec.layers[i].mask) for i in heads), seed=seed)
    start = 0
    for i in by_fineness:
        layer = spec.layers[i]
        layer.mask = list(range(start, start + len(layer.mask)))
        start += len(layer.mask)
    for i in heads:
        spec.layers[i].anchors = list(anchors)
        spec.layers[i].num = len(anchors)


def build_model(cfg: TrainConfig, names: Sequence[str], train_wh: np.ndarray | None = None) -> tuple[nn.Module, bool]:
    """The network for `cfg`: from scratch, full darknet weights, or a backbone prefix.

    When the dataset's class count differs from the cfg's, only the head convolutions (the ones
    feeding a [yolo] layer) are re-created; every other tensor keeps the loaded values.
    Returns:
        (Darknet in train mode, whether the head layers were freshly initialised).
    """
    from yolo4.darknet import Darknet, load_weights
    from yolo4.darknet.layers import Convolutional
    from yolo4.models.zoo import resolve_spec, set_num_classes

    nc = len(names)
    spec = resolve_spec(cfg.model, num_classes=None, img_size=cfg.img_size)
    if cfg.cmbn:
        for layer in spec.layers:
            if isinstance(layer, Convolutional) and layer.batch_normalize:
                layer.batch_normalize = 2  # CmBatchNorm2d; plain BN in eval mode and in exported cfgs
    if cfg.anchors == "kmeans":
        if train_wh is None:
            raise Yolo4Error("anchors=kmeans needs the training boxes")
        set_kmeans_anchors(spec, train_wh, cfg.img_size, cfg.seed)
    elif cfg.anchors != "cfg":
        raise Yolo4Error(f"anchors={cfg.anchors!r}: choose cfg or kmeans")
    if cfg.scale_x_y is not None:  # decoding changes: it goes into the spec (and the exported cfg)
        for y in spec.yolo_layers:
            y.scale_x_y = float(cfg.scale_x_y)
    if cfg.weights is None:
        spec = set_num_classes(spec, nc) if spec.yolo_layers[0].classes != nc else spec
        return Darknet(spec).train(), True
    base = Darknet(spec)
    load_weights(base, cfg.weights, upto=cfg.weights_upto)
    if all(y.classes == nc for y in spec.yolo_layers):
        return base.train(), cfg.weights_upto is not None
    model = Darknet(set_num_classes(spec, nc))
    own = model.state_dict()
    own.update({k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape})
    model.load_state_dict(own)
    return model.train(), True


def init_head_biases(model: nn.Module, img_hw: tuple[int, int]) -> None:
    """Priors for freshly initialised heads (logit heads only): objectness ~ 8 objects per
    image spread over the head's cells, classes ~ 0.6 / C. Speeds up training from scratch."""
    net = unwrap(model)
    for idx, layer in zip(net.head_indices, net.yolo_layers):
        if layer.new_coords:
            continue
        conv = net.blocks[idx - 1].conv
        if conv.bias is None:
            continue
        na, nc = len(layer.mask), layer.classes
        with torch.no_grad():
            b = conv.bias.view(na, 5 + nc)
            b[:, 4] += math.log(8 / max(_head_cells(net, idx, img_hw), 1) / len(net.yolo_layers))
            b[:, 5:] += math.log(0.6 / max(nc - 0.99, 0.01))


def _head_cells(net: nn.Module, idx: int, img_hw: tuple[int, int]) -> int:
    from yolo4.darknet import infer_shapes

    info = infer_shapes(net.spec, img_hw)[idx]
    return info.out_chw[1] * info.out_chw[2]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """SGD groups: weight decay on conv/linear weights only; BN weights and all biases without."""
    decay, no_decay = [], []
    for m in unwrap(model).modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "weight" and not isinstance(m, nn.modules.batchnorm._BatchNorm):
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over `param_groups` (no weight decay on BN and biases)."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    raise Yolo4Error(f"optimizer={cfg.optimizer!r}: choose sgd or adamw")


def freeze_layers(model: nn.Module, n: int) -> None:
    """Layers 0..n-1: no gradients, BatchNorm in eval mode (call after every model.train())."""
    net = unwrap(model)
    for block in list(net.blocks)[:n]:
        for p in block.parameters():
            p.requires_grad_(False)
        block.eval()


def set_drop_scale(model: nn.Module, scale: float) -> None:
    """DropBlock schedule: every [dropout] layer's rate = its cfg probability * scale."""
    from yolo4.darknet.network import DropoutDarknet

    for m in unwrap(model).modules():
        if isinstance(m, DropoutDarknet):
            m.drop_scale = float(scale)


def augment_config(cfg: TrainConfig, final_epochs: bool = False):
    from yolo4.data.augment import AugmentConfig

    mix = 0.0 if final_epochs else None
    return AugmentConfig(mosaic=cfg.mosaic if mix is None else 0.0, mixup=cfg.mixup if mix is None else 0.0,
                         cutmix=cfg.cutmix if mix is None else 0.0, jitter=cfg.jitter,
                         scale=(cfg.scale_min, cfg.scale_max), hue=cfg.hue, saturation=cfg.saturation,
                         exposure=cfg.exposure, flip=cfg.flip, letterbox=False)


def autocast_dtype(cfg: "TrainConfig", device: torch.device) -> torch.dtype | None:
    """Mixed precision for the forward pass: float16 on CUDA (with a GradScaler), bfloat16 on
    CPUs whose oneDNN has native bf16 kernels (about 2x faster there; no scaler needed), else None."""
    if not cfg.amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def adversarial_images(model: nn.Module, loss_fn: YoloLoss, images: torch.Tensor, targets: torch.Tensor,
                       eps: float) -> torch.Tensor:
    """Self-adversarial training's first pass: one FGSM step that raises the loss.
    images Tensor[B, 3, H, W] in [0, 1]. Returns a new Tensor[B, 3, H, W] in [0, 1]."""
    x = images.detach().clone().requires_grad_(True)
    loss, _ = loss_fn(unwrap(model)(x), targets, tuple(images.shape[-2:]))
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


# ------------------------------------------------------------------ logging
class _Logger:
    """results.csv (+ TensorBoard when importable) + training-curve PNG; rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.out_dir, self.enabled = out_dir, enabled
        self.csv = out_dir / "results.csv"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed
                self.tb = None

    def write(self, history: list[dict[str, float]]) -> None:
        if not self.enabled or not history:
            return
        keys = list(history[0])
        for row in history[1:]:
            keys += [k for k in row if k not in keys]
        tmp = self.csv.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for row in history:
                w.writerow({k: row.get(k, "") for k in keys})
        os.replace(tmp, self.csv)
        if self.tb is not None:
            row = history[-1]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, int(row["epoch"]))
            self.tb.flush()
        try:
            from yolo4.viz.plots import plot_training_curves

            plot_training_curves(self.csv, self.out_dir / "results.png")
        except Exception as e:  # a plot must never stop training
            log.warning("could not draw the training curves: %s", e)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _say(msg: str, state_or_info) -> None:
    info = state_or_info.dist if hasattr(state_or_info, "dist") else state_or_info
    if info.is_main:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)


# ------------------------------------------------------------------ validation
@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches, amp_dtype: torch.dtype | None = None) -> int:
    """Precise BN (as detectron2's hook): replace every BatchNorm's running mean/var by their
    average over `batches` (an iterable of Tensor[B, 3, H, W]) under the current weights. Short
    runs need it: darknet's BN momentum (0.03) leaves the running statistics far behind the
    weights. Only BN layers run in train mode (dropout stays off). `amp_dtype`: the training's
    autocast dtype (the statistics are then those of the network as it trains). Returns the
    batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    n = 0
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        for x in batches:
            reset_cmbn(model)  # CmBN layers: each batch's own statistics, as plain BN
            x = x.to(device)
            if amp_dtype is not None and device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
            n += 1
    reset_cmbn(model)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return n


def validate(model: nn.Module, dataset, names: Sequence[str], img_size: int, device: torch.device,
             conf: float = 0.001, iou: float = 0.6, batch_size: int = 32, progress: bool = False,
             plots_dir: str | os.PathLike | None = None):
    """COCO metrics of `model` (a Darknet, left in eval mode) on `dataset`."""
    from yolo4.engine.evaluate import evaluate
    from yolo4.engine.predict import Detector

    det = Detector(model, names=list(names), img_size=img_size, conf=conf, iou=iou, device=device, labels="all")
    return evaluate(det, dataset, batch_size=batch_size, progress=progress, plots_dir=plots_dir)


# ------------------------------------------------------------------ checkpoints
def _checkpoint_state(state: TrainState) -> dict[str, Any]:
    from yolo4.darknet import format_cfg

    net = unwrap(state.model)
    return {
        "model": net.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "best_fitness": state.best_fitness,
        "history": state.history,
        "nan_skipped": state.nan_skipped,
        "config": state.cfg.to_dict(),
        "cfg_text": format_cfg(net.spec),
        "names": list(state.names),
        "rng": rng_state(),
    }


def _export_best(state: TrainState, ckpt: dict[str, Any]) -> tuple[Path, Path]:
    """best.pt -> best.cfg + best.weights (darknet format; the EMA weights when there are any)."""
    from yolo4.darknet import Darknet, parse_cfg
    from yolo4.export.darknet import export_darknet

    net = Darknet(parse_cfg(ckpt["cfg_text"], source=str(state.out_dir / "best.cfg")))
    net.load_state_dict(ckpt["ema"]["module"] if ckpt.get("ema") else ckpt["model"])
    (state.out_dir / "names.txt").write_text("\n".join(state.names) + "\n")
    return export_darknet(net, state.out_dir / "best.cfg", img_size=(val_size(state.cfg),) * 2)


# ------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, hooks: Sequence[Any] = ()) -> TrainResult:
    """Run (or resume) a training run; see the module docstring. Returns a TrainResult."""
    from tqdm import tqdm

    from yolo4.data.dataset import load_dataset
    from yolo4.data.loader import build_loader

    resumed: dict[str, Any] | None = None
    if cfg.resume:
        resumed, path = load_latest(cfg.resume)
        keep = {k: getattr(cfg, k) for k in ("device", "workers", "progress", "threads")}
        cfg = TrainConfig.from_dict({**resumed["config"], **keep, "resume": None, "out": str(cfg.resume)})
        cfg_resume_from = path
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if not cfg.data:
        raise Yolo4Error("no dataset: give --data DATA")
    for key in ("img_size", "small_img_size", "val_img_size"):
        size = getattr(cfg, key)
        if size is not None and (size <= 0 or size % 32):
            raise Yolo4Error(f"{key}={size}: input sizes must be positive multiples of 32 (the network's stride)")
    device = select_device(cfg.device)
    info = init_distributed(device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if cfg.batch % (cfg.subdivisions * info.world_size):
        raise Yolo4Error(f"batch {cfg.batch} is not divisible by subdivisions {cfg.subdivisions} x "
                         f"{info.world_size} processes")
    mini = cfg.batch // cfg.subdivisions // info.world_size  # images per forward on each process
    out_dir = Path(cfg.out)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)

    # data
    train_set = load_dataset(cfg.data, "train", progress=False)
    val_set = load_dataset(cfg.data, "val", progress=False)
    if cfg.max_train_images:
        train_set = train_set.subset(range(min(cfg.max_train_images, len(train_set))))
    if cfg.cache_images:
        train_set.cache_images(progress=cfg.progress and info.is_main)
    epoch_val_set = val_set.subset(range(min(cfg.max_val_images, len(val_set)))) if cfg.max_val_images else val_set
    names = list(train_set.names)
    sampler = torch.utils.data.DistributedSampler(range(len(train_set)), num_replicas=info.world_size,
                                                  rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    steps_per_epoch = len(sampler) // (mini * cfg.subdivisions)
    if steps_per_epoch < 1:
        raise Yolo4Error(f"{len(train_set)} training images are fewer than one batch of {cfg.batch}")

    def loader_for(epoch: int):
        final = cfg.close_mosaic > 0 and epoch >= cfg.epochs - cfg.close_mosaic
        return build_loader(train_set, epoch_img_size(cfg, epoch), mini, augment_config(cfg, final), shuffle=False,
                            workers=cfg.workers, sampler=sampler, seed=cfg.seed + info.rank, drop_last=True)

    def bn_batches():
        from itertools import islice

        plain = build_loader(train_set, val_size(cfg), mini, None, shuffle=False, workers=0)
        return (images for images, _, _ in islice(plain, cfg.precise_bn_batches))

    # model, loss, optimiser
    train_wh = None
    if cfg.anchors == "kmeans":
        wh = [b[:, 2:] - b[:, :2] for b in (train_set.labels(i)[0] for i in range(len(train_set))) if len(b)]
        hw = train_set.image_hw[0]
        train_wh = np.concatenate(wh) * (cfg.img_size / max(hw))
    model, fresh_head = build_model(cfg, names, train_wh)
    if fresh_head and resumed is None:
        init_head_biases(model, (cfg.img_size, cfg.img_size))
    model.to(device)
    net: nn.Module = model
    if cfg.freeze:
        freeze_layers(net, cfg.freeze)
    ddp_model = wrap_model(net, device, info)
    net = unwrap(ddp_model)  # SyncBatchNorm conversion may have replaced it
    if cfg.cmbn and info.enabled and device.type == "cuda":
        _say("warning: cmbn=True: under DDP on CUDA SyncBatchNorm (statistics over all GPUs) replaces CmBN", info)
    loss_fn = YoloLoss(net.yolo_layers, overrides=LossOverrides(
        iou_loss=cfg.iou_loss, iou_thresh=cfg.iou_thresh, ignore_thresh=cfg.ignore_thresh,
        label_smooth_eps=cfg.label_smoothing, iou_normalizer=cfg.iou_normalizer,
        cls_normalizer=cfg.cls_normalizer, obj_normalizer=cfg.obj_normalizer, scale_x_y=cfg.scale_x_y),
        neighbor_cells=cfg.neighbor_cells)
    optimizer = make_optimizer(cfg, net)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if use_amp else None
    if autocast_dtype(cfg, device) is not None and device.type == "cpu":
        net.to(memory_format=torch.channels_last)  # oneDNN's fast bf16 convolutions want NHWC
    ema = ModelEMA(net, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
    schedule = ScheduleConfig(policy=cfg.policy, burn_in=cfg.burn_in, steps=cfg.steps, scales=cfg.scales,
                              final_ratio=cfg.final_lr_ratio,
                              sgdr_cycle=max(1, int(cfg.sgdr_cycle_epochs * steps_per_epoch)),
                              sgdr_mult=cfg.sgdr_mult)
    base_lr = cfg.lr * cfg.batch / cfg.lr_batch
    state = TrainState(cfg, out_dir, ddp_model, ema, optimizer, scaler, device, info, names,
                       total_steps=cfg.epochs * steps_per_epoch, loss_fn=loss_fn, schedule=schedule, base_lr=base_lr,
                       bn_batches=bn_batches)
    if resumed is not None:
        net.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        if ema is not None and resumed.get("ema"):
            ema.load_state_dict(resumed["ema"])
        if scaler is not None and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        state.epoch, state.step = int(resumed["epoch"]), int(resumed["step"])
        state.best_fitness = float(resumed["best_fitness"])
        state.history = list(resumed["history"])
        state.nan_skipped = int(resumed.get("nan_skipped", 0))
        set_rng_state(resumed["rng"])
        _say(f"resuming {out_dir} from {cfg_resume_from} after epoch {state.epoch} (step {state.step})", info)
    logger = _Logger(out_dir, info.is_main)
    for h in hooks:
        getattr(h, "on_start", lambda s: None)(state)
    _say(f"train: {cfg.model} on {cfg.data}: {len(train_set)} train / {len(val_set)} val images, {len(names)} "
         f"classes, {cfg.img_size}px, batch {cfg.batch} ({info.world_size} x {cfg.subdivisions} x {mini}), "
         f"lr {base_lr:g}, {cfg.epochs} epochs x {steps_per_epoch} steps, {device}", info)

    epoch_times: list[tuple[float, bool]] = []  # (seconds start to start, small size) of the epochs run here
    t_run, max_epochs = time.time(), cfg.epochs
    t_last = t_run
    while state.epoch < cfg.epochs:
        t0 = time.time()
        if epoch_times:  # the previous epoch's time now includes its validation and checkpoints
            epoch_times[-1] = (t0 - t_last, epoch_times[-1][1])
        t_last = t0
        size = epoch_img_size(cfg, state.epoch)
        sampler.set_epoch(state.epoch)
        loader = loader_for(state.epoch)
        ddp_model.train()
        if cfg.freeze:
            freeze_layers(net, cfg.freeze)
        sums = torch.zeros(4, device=device)  # box, obj, cls, total (per image)
        counted = 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (cfg.progress and info.is_main), file=sys.stderr, leave=False)
        it = iter(loader)
        for _ in range(steps_per_epoch):
            parts = _train_step(state, it)
            bar.update()
            if parts is None:
                continue
            sums += parts
            counted += 1
            bar.set_postfix(loss=f"{state.last_loss:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            for h in hooks:
                getattr(h, "after_step", lambda s: None)(state)
        bar.close()
        del it, loader
        state.epoch += 1
        epoch_times.append((time.time() - t0, size != cfg.img_size))
        if cfg.time_budget_min and resumed is None:  # re-planned after every epoch
            # (before the epoch's end, so that a run cut to this epoch still validates it)
            fit = broadcast_object(plan_epochs(cfg, epoch_times, time.time() - t_run, max_epochs), info)
            if fit != cfg.epochs:
                _say(f"time budget {cfg.time_budget_min:g} min: training {fit} epochs instead of {cfg.epochs}", info)
                cfg.epochs = fit
                state.total_steps = cfg.epochs * steps_per_epoch
        _end_epoch(state, (sums / max(counted, 1)).tolist(), t0, epoch_val_set, logger, size)
        barrier(info)
        for h in hooks:
            getattr(h, "after_epoch", lambda s: None)(state)

    result = TrainResult(out_dir, _best(state.history, "val/mAP50"), _best(state.history, "val/mAP50-95"),
                         state.epoch, state.history)
    if info.is_main and cfg.export and (out_dir / "best.pt").exists():
        from yolo4.engine.checkpoint import load_checkpoint

        result.best_cfg, result.best_weights = _export_best(state, load_checkpoint(out_dir / "best.pt"))
        _say(f"best model exported to {result.best_cfg} + {result.best_weights}", info)
    for h in hooks:
        getattr(h, "on_end", lambda s: None)(state)
    logger.close()
    barrier(info)
    cleanup(info)
    return result


def _train_step(state: TrainState, batches) -> torch.Tensor | None:
    """One optimizer step over `subdivisions` mini-batches from the iterator `batches`.

    Returns:
        Tensor[4] (box, obj, cls, total per image), averaged over processes; None when the loss
        was not finite on some process (the step is skipped and counted in state.nan_skipped).
    """
    from yolo4.data.augment import multiscale_batch, random_shape

    cfg, info, device, net = state.cfg, state.dist, state.device, unwrap(state.model)
    lr = lr_at(state.step, state.base_lr, state.total_steps, state.schedule)
    for g in state.optimizer.param_groups:
        g["lr"] = lr
    if cfg.dropblock:
        set_drop_scale(net, min(1.0, 2.0 * state.step / max(state.total_steps, 1)))
    new_hw = None  # darknet random=1: a new size every 10 steps, a pure function of the step
    if cfg.multiscale:
        new_hw = random_shape(epoch_img_size(cfg, state.epoch), np.random.default_rng([cfg.seed, 7, state.step // 10]))
    use_amp = state.scaler is not None
    skip = False
    acc = torch.zeros(4, device=device)
    if cfg.cmbn:
        reset_cmbn(net)  # a new darknet batch: CmBN statistics start again
    for _ in range(cfg.subdivisions):
        images, targets, _ = next(batches)
        images, targets = images.to(device, non_blocking=True), targets.to(device)
        if new_hw is not None:
            images, targets = multiscale_batch(images, targets, new_hw)
        if cfg.sat_eps > 0:
            images = adversarial_images(state.model, state.loss_fn, images, targets, cfg.sat_eps)
        amp_dtype = autocast_dtype(cfg, device)
        if amp_dtype is not None and device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = state.model(images)
        outputs = [o.float() for o in outputs]  # the loss runs in float32
        loss, parts = state.loss_fn(outputs, targets, tuple(images.shape[-2:]))
        bad = any_true(not bool(torch.isfinite(loss)), device, info)
        if bad:  # still run backward (zeroed) so that DDP's gradient sync stays in step
            skip = True
            loss = torch.nan_to_num(loss * 0.0, nan=0.0, posinf=0.0, neginf=0.0)
        # gradient = lr_batch x the mean over the global batch (DDP averages over processes)
        scaled = loss * (info.world_size * cfg.lr_batch / cfg.batch)
        (state.scaler.scale(scaled) if use_amp else scaled).backward()
        if not bad:
            acc += torch.stack([parts["box"], parts["obj"], parts["cls"], loss.detach() / len(images)])
    if skip:
        state.optimizer.zero_grad(set_to_none=True)
        state.nan_skipped += 1
        _say(f"warning: non-finite loss at epoch {state.epoch + 1} step {state.step}: step skipped "
             f"({state.nan_skipped} so far)", info)
        return None
    if use_amp:
        state.scaler.unscale_(state.optimizer)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    if use_amp:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update(net)
    state.step += 1
    acc = all_reduce_mean(acc / cfg.subdivisions, info)
    state.last_loss = float(acc[3])
    return acc


def _end_epoch(state: TrainState, mean: list[float], t0: float, val_set, logger: _Logger, img_size: int) -> None:
    """Validation of the EMA model, results.csv/TensorBoard/plots, last.pt (+ best.pt); rank 0."""
    cfg = state.cfg
    row: dict[str, float] = {"epoch": state.epoch, "train/box": mean[0], "train/obj": mean[1], "train/cls": mean[2],
                             "train/loss": mean[3], "lr": state.optimizer.param_groups[0]["lr"],
                             "nan_skipped": state.nan_skipped, "img_size": img_size}
    if not state.dist.is_main:
        state.history.append(row)
        return
    do_val = state.epoch % cfg.val_every == 0 or state.epoch == cfg.epochs
    if do_val:
        net = state.ema.module if state.ema is not None else unwrap(state.model)
        if cfg.precise_bn_batches > 0 and state.bn_batches is not None:
            recompute_bn_stats(net, state.bn_batches(), autocast_dtype(cfg, state.device))
        m = validate(net, val_set, state.names, val_size(cfg), state.device, cfg.val_conf, cfg.val_iou,
                     progress=cfg.progress)
        row["val/mAP50"], row["val/mAP50-95"] = float(m.map50), float(m.map)
        state.model.train()
    row["time_s"] = seconds = time.time() - t0
    state.history.append(row)
    improved = do_val and _fitness(row) > state.best_fitness
    if improved:
        state.best_fitness = _fitness(row)
    ckpt = _checkpoint_state(state)
    save_checkpoint(ckpt, state.out_dir / "last.pt")
    if improved:
        save_checkpoint(ckpt, state.out_dir / "best.pt", keep_previous=False)
    logger.write(state.history)
    _say(f"epoch {state.epoch}/{cfg.epochs}: loss {mean[3]:.4f} (box {mean[0]:.4f} obj {mean[1]:.4f} "
         f"cls {mean[2]:.4f})" + (f", mAP50 {row['val/mAP50']:.4f}, mAP50-95 {row['val/mAP50-95']:.4f}"
                                  if do_val else "") + f", {seconds:.0f}s", state)


def val_size(cfg: TrainConfig) -> int:
    """The input size of validation, precise BN and the exported best.cfg."""
    return int(cfg.val_img_size or cfg.img_size)


def epoch_img_size(cfg: TrainConfig, epoch: int, epochs: int | None = None) -> int:
    """The training input size of `epoch` (0-based) of a run of `epochs` (default cfg.epochs):
    `small_img_size` for the first `small_img_epochs` of them, then `img_size`."""
    epochs = cfg.epochs if epochs is None else epochs
    if cfg.small_img_size and epoch < int(cfg.small_img_epochs * epochs):
        return int(cfg.small_img_size)
    return cfg.img_size


def plan_epochs(cfg: TrainConfig, epoch_times: Sequence[tuple[float, bool]], spent_s: float,
                max_epochs: int) -> int:
    """The most epochs in all (at least those done, at most `max_epochs`) whose predicted time fits
    `cfg.time_budget_min`, when `spent_s` seconds have gone.

    Args:
        epoch_times: (seconds, ran at small_img_size) of every epoch done so far.
    A small epoch is predicted by the median small one done, a full-size one by the median
    full-size one (a passing slowdown of the machine does not cut the run); until one of a kind
    has run, from the other kind scaled by the ratio of input areas (which overestimates
    full-size epochs, the safe side).
    """
    done = len(epoch_times)
    small_t = [t for t, small in epoch_times if small]
    full_t = [t for t, small in epoch_times if not small]
    area = (cfg.small_img_size / cfg.img_size) ** 2 if cfg.small_img_size else 1.0
    t_full = float(np.median(full_t)) if full_t else float(np.median(small_t)) / area
    t_small = float(np.median(small_t)) if small_t else t_full * area
    best = done
    for n in range(done + 1, max_epochs + 1):
        n_small = sum(epoch_img_size(cfg, e, n) != cfg.img_size for e in range(done, n))
        if spent_s + n_small * t_small + (n - done - n_small) * t_full <= cfg.time_budget_min * 60:
            best = n
    return best


def _fitness(row: dict[str, float]) -> float:
    """What `best.pt` maximises: 0.1 * mAP50 + 0.9 * mAP50-95 (NaN counts as -1)."""
    f = 0.1 * row.get("val/mAP50", math.nan) + 0.9 * row.get("val/mAP50-95", math.nan)
    return f if math.isfinite(f) else -1.0


def _best(history: list[dict[str, float]], key: str) -> float:
    vals = [r[key] for r in history if key in r and math.isfinite(r[key])]
    return max(vals) if vals else math.nan


def run_train(demo: bool = False, options: Sequence[str] = (), **given: Any) -> TrainResult | dict:
    """`yolo4 train`: a TrainConfig from the given values (None: default) and `KEY=VALUE`
    options, then `train`; with demo=True the main job (`yolo4.engine.demo.run_demo`)."""
    if demo:
        from yolo4.engine.demo import run_demo

        return run_demo(given.get("out") or "runs/demo", device=given.get("device") or "auto")
    cfg = TrainConfig.from_args(list(options))
    for k, v in given.items():
        if v is not None:
            setattr(cfg, k, v)
    if not cfg.resume and not cfg.data:
        raise Yolo4Error("give --data DATA (or --resume RUN, or --demo)")
    return train(cfg)
