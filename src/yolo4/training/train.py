"""Training: the YOLOv4 recipe as a plain loop with hooks.

    from yolo4.training.config import TrainConfig
    from yolo4.training.train import train

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

The pieces live next door: `TrainConfig` in `yolo4.training.config`, the device, network,
optimiser and augmentation settings built from it in `yolo4.training.build`, precise BN and
validation in `yolo4.training.validation`. Here: the loop, its state, logging, checkpoints, the
epoch planner (input size per epoch, time budget) and the self-adversarial pass.

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
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolo4.darknet.cmbn import reset_cmbn
from yolo4.errors import Yolo4Error
from yolo4.ops.losses import YoloLoss
from yolo4.training.build import (
    augment_config,
    autocast_dtype,
    build_model,
    freeze_layers,
    init_head_biases,
    make_loss,
    make_optimizer,
    select_device,
    set_drop_scale,
    train_box_sizes,
)
from yolo4.training.checkpoint import (
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from yolo4.training.config import TrainConfig
from yolo4.training.defaults import close_mosaic_epochs, resolve_defaults, split_note
from yolo4.training.distributed import (
    DistInfo,
    all_reduce_mean,
    any_true,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    wrap_model,
)
from yolo4.training.ema import ModelEMA, unwrap
from yolo4.training.schedule import ScheduleConfig, lr_at
from yolo4.training.validation import recompute_bn_stats, validate

log = logging.getLogger(__name__)


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
        raise Yolo4Error(
            f"batch {cfg.batch} is not divisible by subdivisions {cfg.subdivisions} x {info.world_size} processes"
        )
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
    cfg, auto_notes = resolve_defaults(cfg, train_set, device)  # the None/"auto" fields, from the data
    if info.is_main:
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if cfg.cache_images:
        train_set.cache_images(progress=cfg.progress and info.is_main)
    epoch_val_set = val_set.subset(range(min(cfg.max_val_images, len(val_set)))) if cfg.max_val_images else val_set
    names = list(train_set.names)
    sampler = torch.utils.data.DistributedSampler(
        range(len(train_set)), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    steps_per_epoch = len(sampler) // (mini * cfg.subdivisions)
    if steps_per_epoch < 1:
        raise Yolo4Error(f"{len(train_set)} training images are fewer than one batch of {cfg.batch}")

    def loader_for(epoch: int):
        final = close_mosaic_epochs(cfg) > 0 and epoch >= cfg.epochs - close_mosaic_epochs(cfg)
        return build_loader(
            train_set,
            epoch_img_size(cfg, epoch),
            mini,
            augment_config(cfg, final),
            shuffle=False,
            workers=cfg.workers,
            sampler=sampler,
            seed=cfg.seed + info.rank,
            drop_last=True,
        )

    def bn_batches():
        from itertools import islice

        plain = build_loader(train_set, val_size(cfg), mini, None, shuffle=False, workers=0)
        return (images for images, _, _ in islice(plain, cfg.precise_bn_batches))

    # model, loss, optimiser
    train_wh = train_box_sizes(train_set, cfg.img_size) if cfg.anchors == "kmeans" else None
    model, fresh_head = build_model(cfg, names, train_wh)
    if fresh_head and resumed is None:
        init_head_biases(model, (cfg.img_size, cfg.img_size))
    model.to(device)
    if device.type == "cpu":  # oneDNN's convolutions are faster in NHWC (bf16 and fp32); before DDP
        model.to(memory_format=torch.channels_last)  # builds its gradient buckets on the parameters' layout
    net: nn.Module = model
    if cfg.freeze:
        freeze_layers(net, cfg.freeze)
    ddp_model = wrap_model(net, device, info)
    net = unwrap(ddp_model)  # SyncBatchNorm conversion may have replaced it
    if cfg.cmbn and info.enabled and device.type == "cuda":
        _say("warning: cmbn=True: under DDP on CUDA SyncBatchNorm (statistics over all GPUs) replaces CmBN", info)
    loss_fn = make_loss(cfg, net)
    optimizer = make_optimizer(cfg, net)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if use_amp else None
    ema = ModelEMA(net, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
    schedule = ScheduleConfig(
        policy=cfg.policy,
        burn_in=cfg.burn_in,
        steps=cfg.steps,
        scales=cfg.scales,
        final_ratio=cfg.final_lr_ratio,
        sgdr_cycle=max(1, int(cfg.sgdr_cycle_epochs * steps_per_epoch)),
        sgdr_mult=cfg.sgdr_mult,
    )
    base_lr = cfg.lr * cfg.batch / cfg.lr_batch
    state = TrainState(
        cfg,
        out_dir,
        ddp_model,
        ema,
        optimizer,
        scaler,
        device,
        info,
        names,
        total_steps=cfg.epochs * steps_per_epoch,
        loss_fn=loss_fn,
        schedule=schedule,
        base_lr=base_lr,
        bn_batches=bn_batches,
    )
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
    _say(
        f"train: {cfg.model} on {cfg.data}: {len(train_set)} train / {len(val_set)} val images, {len(names)} "
        f"classes, {cfg.img_size}px, batch {cfg.batch} ({info.world_size} x {cfg.subdivisions} x {mini}), "
        f"lr {base_lr:g}, {cfg.epochs} epochs x {steps_per_epoch} steps, {device}",
        info,
    )
    for note in [split_note(train_set, val_set, cfg.data), *auto_notes]:
        _say(f"  {note}", info)

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
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not (cfg.progress and info.is_main),
            file=sys.stderr,
            leave=False,
        )
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

    result = TrainResult(
        out_dir, _best(state.history, "val/mAP50"), _best(state.history, "val/mAP50-95"), state.epoch, state.history
    )
    if info.is_main and cfg.export and (out_dir / "best.pt").exists():
        from yolo4.training.checkpoint import load_checkpoint

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
        if device.type == "cpu":
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
        _say(
            f"warning: non-finite loss at epoch {state.epoch + 1} step {state.step}: step skipped "
            f"({state.nan_skipped} so far)",
            info,
        )
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


def adversarial_images(
    model: nn.Module, loss_fn: YoloLoss, images: torch.Tensor, targets: torch.Tensor, eps: float
) -> torch.Tensor:
    """Self-adversarial training's first pass: one FGSM step that raises the loss.
    images Tensor[B, 3, H, W] in [0, 1]. Returns a new Tensor[B, 3, H, W] in [0, 1]."""
    x = images.detach().clone().requires_grad_(True)
    loss, _ = loss_fn(unwrap(model)(x), targets, tuple(images.shape[-2:]))
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def _end_epoch(state: TrainState, mean: list[float], t0: float, val_set, logger: _Logger, img_size: int) -> None:
    """Validation of the EMA model, results.csv/TensorBoard/plots, last.pt (+ best.pt); rank 0."""
    cfg = state.cfg
    row: dict[str, float] = {
        "epoch": state.epoch,
        "train/box": mean[0],
        "train/obj": mean[1],
        "train/cls": mean[2],
        "train/loss": mean[3],
        "lr": state.optimizer.param_groups[0]["lr"],
        "nan_skipped": state.nan_skipped,
        "img_size": img_size,
    }
    if not state.dist.is_main:
        state.history.append(row)
        return
    do_val = state.epoch % cfg.val_every == 0 or state.epoch == cfg.epochs
    if do_val:
        net = state.ema.module if state.ema is not None else unwrap(state.model)
        if cfg.precise_bn_batches > 0 and state.bn_batches is not None:
            recompute_bn_stats(net, state.bn_batches(), autocast_dtype(cfg, state.device))
        m = validate(net, val_set, state.names, val_size(cfg), state.device, cfg.val_postprocess, progress=cfg.progress)
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
    _say(
        f"epoch {state.epoch}/{cfg.epochs}: loss {mean[3]:.4f} (box {mean[0]:.4f} obj {mean[1]:.4f} "
        f"cls {mean[2]:.4f})"
        + (f", mAP50 {row['val/mAP50']:.4f}, mAP50-95 {row['val/mAP50-95']:.4f}" if do_val else "")
        + f", {seconds:.0f}s",
        state,
    )


# ------------------------------------------------------------------ epoch plan and best
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


def plan_epochs(cfg: TrainConfig, epoch_times: Sequence[tuple[float, bool]], spent_s: float, max_epochs: int) -> int:
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
