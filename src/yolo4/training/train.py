"""Training: the YOLOv4 recipe as a plain loop plus hooks.

    from yolo4.training.config import TrainConfig
    from yolo4.training.train import train

    cfg = TrainConfig(data="shapes/data.yaml", model="yolov4-tiny", epochs=30, batch=32, img_size=256)
    result = train(cfg)                       # runs/train: last.pt, best.pt, results.csv, plots
    train(TrainConfig(resume="runs/train"))   # continue exactly where last.pt stopped
    train(cfg, hooks=[MyHook()])              # yolo4.training.hooks.Hook subclasses

One `TrainConfig` (flat, typed, `from_args(["lr=0.02"])` overrides) decides everything and is
not changed by the run; `train` turns it into objects in one place (`_setup`) and runs the loop:

    for epoch (input size: small_img_size for the first epochs if set, then img_size):
      for mini-batch:
        [random shape] -> [self-adversarial pass] -> forward (AMP) -> YoloLoss
        -> non-finite? skip + report -> backward (accumulated over `subdivisions`) -> optimizer step

Everything around the steps is a hook (`yolo4.training.hooks`, called in order): the lr and
DropBlock schedules, EMA, the time budget, precise BN + validation, logging, last.pt/best.pt,
and the darknet export of the best model. User hooks run after them.

Batch semantics follow darknet: `batch` images per optimizer step over all processes,
`subdivisions` mini-batches per step (gradient accumulation). The gradient is `lr_batch`
times the mean over the global batch (the sum over `lr_batch` images, as in the usual PyTorch
YOLO recipes where lr 0.01 goes with batch 64) and the learning rate follows the global batch
(`lr * batch / lr_batch`, the linear scaling rule). BatchNorm uses each mini-batch's statistics,
or with `cmbn=True` (CmBN, darknet's batch_normalize=2) those of the step's mini-batches so far.
With `sat_eps` the attack's forward pass counts as one of those mini-batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

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
    train_box_sizes,
)
from yolo4.training.checkpoint import DISK_FULL, CheckpointError, RunLock, load_latest, load_model_state, set_rng_state
from yolo4.training.config import TrainConfig, check_time_budget, resolved
from yolo4.training.defaults import close_mosaic_epochs, planned_fields, resolve_defaults, split_note
from yolo4.training.distributed import (
    DistInfo,
    all_reduce_mean,
    any_true,
    barrier,
    cleanup,
    init_distributed,
    wrap_model,
)
from yolo4.training.ema import unwrap
from yolo4.training.hooks import Hook, StopOnSignal, default_hooks, say
from yolo4.training.state import TrainState, best_value, val_size
from yolo4.training.validation import readable_subset


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
    stopped: str | None = None  # why a hook stopped the run early (None: it ran its planned epochs)
    signal: int | None = None  # the signal (SIGTERM, SIGINT) that stopped it, if one did


@dataclass
class _Data:
    """The run's datasets and how it batches them."""

    train_set: Any
    sampler: DistributedSampler[int]
    mini: int  # images per forward on each process

    def loader(self, state: TrainState):
        """The training loader of the current epoch (mosaic and friends off for the last
        `close_mosaic_epochs` of the planned epochs), from its step `state.epoch_step` on (a run
        resumed within an epoch gets the rest of that epoch's batches, the same as uninterrupted)."""
        from yolo4.data.loader import build_loader

        cfg = state.cfg
        closing = close_mosaic_epochs(cfg, state.epochs)
        final = closing > 0 and state.epoch >= state.epochs - closing
        return build_loader(
            self.train_set,
            state.img_size(),
            self.mini,
            augment_config(cfg, final),
            shuffle=False,
            workers=resolved(cfg.workers, "workers"),
            sampler=self.sampler,
            seed=cfg.seed + state.dist.rank,
            drop_last=True,
            skip=state.epoch_step * cfg.subdivisions * self.mini,
        )


# ------------------------------------------------------------------ the loop
def train(cfg: TrainConfig, hooks: Sequence[Hook] = ()) -> TrainResult:
    """Run (or resume) a training run; see the module docstring. `hooks` run after the built-in
    ones (`default_hooks(cfg)`). Returns a TrainResult."""
    for h in hooks:
        if not isinstance(h, Hook):
            raise TypeError(f"{h!r} is not a yolo4.training.hooks.Hook")
    state, data = _setup(cfg)
    try:
        return _run(state, data, [*default_hooks(state.cfg), *hooks])
    except OSError as e:  # a full disk while writing results, plots or exports (checkpoints say it themselves)
        if e.errno not in DISK_FULL:
            raise
        raise CheckpointError(
            f"{e.filename or state.out_dir}: cannot write ({DISK_FULL[e.errno]}); the run stops here. Free some "
            f"space, then `yolo4 train --resume {state.out_dir}` continues from its last checkpoint"
        ) from e
    finally:
        if state.run_lock is not None:
            state.run_lock.release()


def _run(state: TrainState, data: _Data, hooks: list[Hook]) -> TrainResult:
    try:
        return _loop(state, data, hooks)
    finally:  # however the run ends, signals are handled as before it
        for h in hooks:
            if isinstance(h, StopOnSignal):
                h.restore()


def _loop(state: TrainState, data: _Data, hooks: list[Hook]) -> TrainResult:
    for h in hooks:
        h.on_start(state)
    state.resumed = None  # the hooks have taken their parts
    if state.epoch_loss is None:
        state.epoch_loss = torch.zeros(4, device=state.device)  # box, obj, cls, total (per image)
    while state.epoch < state.epochs and state.stop is None:
        for h in hooks:
            h.on_epoch_start(state)
        data.sampler.set_epoch(state.epoch)
        loader = data.loader(state)
        state.model.train()
        if state.cfg.freeze:
            freeze_layers(state.net, state.cfg.freeze)
        if state.epoch_step == 0:  # (a run resumed within the epoch keeps the sums of its first steps)
            state.epoch_loss.zero_()
            state.epoch_counted = 0
        batches = iter(loader)
        while state.epoch_step < state.steps_per_epoch and state.stop is None:
            for h in hooks:
                h.on_step_start(state)
            parts = train_step(state, batches)
            state.epoch_step += 1
            state.step_ok = parts is not None
            if parts is not None:
                state.epoch_loss += parts
                state.epoch_counted += 1
            for h in hooks:
                h.on_step_end(state)
            _agree_on_stop(state)
        del batches, loader
        if state.epoch_step < state.steps_per_epoch:  # stopped within the epoch: it is not counted yet
            break
        state.epoch += 1
        state.epoch_step = 0
        box, obj, cls, total = (state.epoch_loss / max(state.epoch_counted, 1)).tolist()
        state.history.append(
            {
                "epoch": state.epoch,
                "train/box": box,
                "train/obj": obj,
                "train/cls": cls,
                "train/loss": total,
                "lr": state.optimizer.param_groups[0]["lr"],
                "nan_skipped": state.nan_skipped,
                "img_size": state.img_size(state.epoch - 1),
            }
        )
        for h in hooks:
            h.on_epoch_end(state)
        _agree_on_stop(state)
        barrier(state.dist)
    if state.stop is not None:
        say(state, f"stopped after {state.epoch} epochs: {state.stop}")
    for h in hooks:
        h.on_end(state)
    barrier(state.dist)
    cleanup(state.dist)
    best_cfg, best_weights = state.best_files or (None, None)
    return TrainResult(
        state.out_dir,
        best_value(state.history, "val/mAP50"),
        best_value(state.history, "val/mAP50-95"),
        state.epoch,
        state.history,
        best_cfg,
        best_weights,
        state.stop,
        state.signal,
    )


def _agree_on_stop(state: TrainState) -> None:
    """Under DDP, a stop asked on one process stops every process at the same step."""
    if state.dist.enabled and any_true(state.stop is not None, state.device, state.dist) and state.stop is None:
        state.stop = "stopped by another process"


# ------------------------------------------------------------------ setup
def _setup(cfg: TrainConfig) -> tuple[TrainState, _Data]:
    """Everything the loop needs, from the config (or from the checkpoint of `cfg.resume`)."""
    resumed: dict[str, Any] | None = None
    resumed_from: Path | None = None
    if cfg.resume:
        run = Path(cfg.resume)
        run = run.parent if run.is_file() else run  # (`--resume runs/x/last.pt` names the run too)
        resumed, resumed_from = load_latest(run)
        keep = {k: getattr(cfg, k) for k in ("device", "workers", "progress", "threads")}
        cfg = TrainConfig.from_dict({**resumed["config"], **keep, "resume": None, "out": str(run)})
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    _check_config(cfg)
    if cfg.qat and resumed is None and str(cfg.weights).endswith(".pt"):
        from yolo4.training.qat import checkpoint_as_darknet

        cfg = checkpoint_as_darknet(cfg)
    device = select_device(cfg.device)
    info = init_distributed(device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if cfg.batch % (cfg.subdivisions * info.world_size):
        raise Yolo4Error(
            f"batch {cfg.batch} is not divisible by subdivisions {cfg.subdivisions} x {info.world_size} processes"
        )
    mini = cfg.batch // cfg.subdivisions // info.world_size
    out_dir = Path(cfg.out)
    lock = RunLock(out_dir).acquire() if info.is_main else None  # before anything is written there
    try:
        return _build(cfg, resumed, resumed_from, info, device, mini, out_dir, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build(
    cfg: TrainConfig,
    resumed: dict[str, Any] | None,
    resumed_from: Path | None,
    info: DistInfo,
    device: torch.device,
    mini: int,
    out_dir: Path,
    lock: RunLock | None,
) -> tuple[TrainState, _Data]:
    from yolo4.data.dataset import load_dataset

    if info.is_main:
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)

    # data (the 90/10 split of a source without one is written down, for `yolo4 val` to find)
    train_set = load_dataset(cfg.data, "train", progress=False, write_split=True)
    val_set = load_dataset(cfg.data, "val", progress=False, write_split=True)
    if cfg.max_train_images:
        train_set = train_set.subset(list(range(min(cfg.max_train_images, len(train_set)))))
    planned = planned_fields(cfg) if resumed is None else frozenset()  # (a resumed run keeps its plan)
    cfg, auto_notes = resolve_defaults(cfg, train_set, device)  # the None/"auto" fields, from the data
    if info.is_main:
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if cfg.cache_images:
        train_set.cache_images(progress=cfg.progress and info.is_main)
    epoch_val_set = (
        val_set.subset(list(range(min(cfg.max_val_images, len(val_set))))) if cfg.max_val_images else val_set
    )
    epoch_val_set, unreadable = readable_subset(epoch_val_set)  # a damaged val image must not stop the run
    if unreadable:
        auto_notes.append(
            f"validation leaves out {len(unreadable)} image(s) that cannot be decoded: {unreadable[0]}"
            + (f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else "")
        )
    names = list(train_set.names)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(train_set)),  # type: ignore[arg-type]  # it reads only len(): indices 0..n-1
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // (mini * cfg.subdivisions)
    if steps_per_epoch < 1:
        raise Yolo4Error(f"{len(train_set)} training images are fewer than one batch of {cfg.batch}")

    def bn_batches() -> Iterator[torch.Tensor]:
        from itertools import islice

        from yolo4.data.loader import build_loader

        plain = build_loader(train_set, val_size(cfg), mini, None, shuffle=False, workers=0)
        return (images for images, _, _ in islice(plain, cfg.precise_bn_batches))

    # model, loss, optimiser
    train_wh = train_box_sizes(train_set, cfg.img_size) if cfg.anchors == "kmeans" else None
    model, fresh_head = build_model(cfg, names, train_wh)
    if fresh_head and resumed is None:
        init_head_biases(model, (cfg.img_size, cfg.img_size))
    if cfg.qat:  # BN folded, int8 simulated from here on (calibrated, or the checkpoint's structure)
        from yolo4.training.qat import qat_model

        model = qat_model(model, cfg, resumed, fresh_head)
    model.to(device)
    # NHWC: oneDNN's convolutions (bf16 and fp32) and cuDNN's tensor-core ones are faster in it; before
    model.to(memory_format=torch.channels_last)  # DDP builds its gradient buckets on the parameters' layout
    if cfg.freeze:
        freeze_layers(model, cfg.freeze)
    ddp_model = wrap_model(model, device, info)
    net = unwrap(ddp_model)  # SyncBatchNorm conversion may have replaced it
    use_amp = cfg.amp and device.type == "cuda"
    loss_fn = make_loss(cfg, net)
    optimizer = make_optimizer(cfg, net)
    state = TrainState(
        cfg=cfg,
        out_dir=out_dir,
        model=ddp_model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cuda", enabled=True) if use_amp else None,
        device=device,
        dist=info,
        names=names,
        loss_fn=loss_fn,
        base_lr=resolved(cfg.lr, "lr") * cfg.batch / cfg.lr_batch,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        val_set=epoch_val_set,
        bn_batches=bn_batches,
        run_lock=lock,
        planned=planned,
    )
    if cfg.cmbn and info.enabled and device.type == "cuda":
        say(state, "warning: cmbn=True: under DDP on CUDA SyncBatchNorm (statistics over all GPUs) replaces CmBN")
    if resumed is not None and resumed_from is not None:
        _restore(state, resumed, resumed_from)
        within = f", {state.epoch_step} steps into epoch {state.epoch + 1}" if state.epoch_step else ""
        say(state, f"resuming {out_dir} from {resumed_from} after epoch {state.epoch}{within} (step {state.step})")
    say(
        state,
        f"train: {cfg.model} on {cfg.data}: {len(train_set)} train / {len(val_set)} val images, {len(names)} "
        f"classes, {cfg.img_size}px, batch {cfg.batch} ({info.world_size} x {cfg.subdivisions} x {mini}), "
        f"lr {state.base_lr:g}, {state.epochs} epochs x {steps_per_epoch} steps, {device}",
    )
    for note in [split_note(train_set, epoch_val_set, cfg.data), *auto_notes]:
        say(state, f"  {note}")
    return state, _Data(train_set, sampler, mini)


def _check_config(cfg: TrainConfig) -> None:
    if not cfg.data:
        raise Yolo4Error("no dataset: give --data DATA")
    if cfg.qat:
        from yolo4.training.qat import check_qat_config

        check_qat_config(cfg)
    check_time_budget(cfg.time_budget_min)
    for key in ("img_size", "small_img_size", "val_img_size"):
        size = getattr(cfg, key)
        if size is not None and (size <= 0 or size % 32):
            raise Yolo4Error(f"{key}={size}: input sizes must be positive multiples of 32 (the network's stride)")


def _restore(state: TrainState, ckpt: dict[str, Any], path: Path) -> None:
    """The loop's part of a checkpoint (the hooks restore theirs from `state.resumed` in on_start)."""
    load_model_state(state.net, ckpt["model"], path)
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
    state.epochs = int(ckpt.get("epochs", state.cfg.epochs))  # the plan (older checkpoints: in the config)
    state.best_fitness = float(ckpt["best_fitness"])
    state.history = list(ckpt["history"])
    state.nan_skipped = int(ckpt.get("nan_skipped", 0))
    state.epoch_step = int(ckpt.get("epoch_step", 0))
    if state.epoch_step:  # stopped within an epoch: its first steps' loss sums
        if state.epoch_step >= state.steps_per_epoch:  # the data changed size since: redo the epoch
            say(state, f"warning: {path} stopped {state.epoch_step} steps into an epoch of {state.steps_per_epoch} "
                f"steps (the data changed?): epoch {state.epoch + 1} starts again")  # fmt: skip
            state.epoch_step = 0
        else:
            state.epoch_loss = torch.tensor(ckpt["epoch_loss"], dtype=torch.float32, device=state.device)
            state.epoch_counted = int(ckpt["epoch_counted"])
    set_rng_state(ckpt["rng"])
    state.resumed = ckpt


# ------------------------------------------------------------------ one step
def train_step(state: TrainState, batches: Iterator) -> torch.Tensor | None:
    """One optimizer step over `subdivisions` mini-batches from the iterator `batches`, at the
    learning rate the schedule hook set.

    Returns:
        Tensor[4] (box, obj, cls, total per image), averaged over processes; None when the loss
        was not finite on some process (the step is skipped and counted in state.nan_skipped).
    """
    from yolo4.data.augment import multiscale_batch, random_shape

    cfg, info, device, net = state.cfg, state.dist, state.device, state.net
    new_hw = None  # darknet random=1: a new size every 10 steps, a pure function of the step
    if cfg.multiscale:
        new_hw = random_shape(state.img_size(), np.random.default_rng([cfg.seed, 7, state.step // 10]))
    skip = False
    acc = torch.zeros(4, device=device)
    if cfg.cmbn:
        reset_cmbn(net)  # a new darknet batch: CmBN statistics start again
    amp_dtype = autocast_dtype(cfg, device)
    for _ in range(cfg.subdivisions):
        images, targets, _ = next(batches)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)  # (pinned)
        if new_hw is not None:
            images, targets = multiscale_batch(images, targets, new_hw)
        if cfg.sat_eps > 0:
            images = adversarial_images(state.model, state.loss_fn, images, targets, cfg.sat_eps)
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = state.model(images)
        outputs = [o.float() for o in outputs]  # the loss runs in float32
        loss, parts = state.loss_fn(outputs, targets, (int(images.shape[-2]), int(images.shape[-1])))
        bad = any_true(not bool(torch.isfinite(loss)), device, info)
        if bad:  # still run backward (zeroed) so that DDP's gradient sync stays in step
            skip = True
            loss = torch.nan_to_num(loss * 0.0, nan=0.0, posinf=0.0, neginf=0.0)
        # gradient = lr_batch x the mean over the global batch (DDP averages over processes)
        scaled = loss * (info.world_size * cfg.lr_batch / cfg.batch)
        (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
        if not bad:
            acc += torch.stack([parts["box"], parts["obj"], parts["cls"], loss.detach() / len(images)])
    if skip:
        _skip_step(state, "loss")
        return None
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)  # (the scaler skips non-finite gradients itself)
    if state.scaler is None or cfg.grad_clip > 0:
        norm = torch.nn.utils.get_total_norm([q.grad for q in net.parameters() if q.grad is not None])
        if state.scaler is None and not bool(torch.isfinite(norm)):
            # a finite loss with a non-finite gradient (yolov4-csp-leaky from scratch on kangaroo had
            # one at the end of its warm-up): one such step makes every weight NaN; the gradients
            # are reduced over processes, so every process agrees
            _skip_step(state, "gradient")
            return None
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(net.parameters(), cfg.grad_clip, norm)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    acc = all_reduce_mean(acc / cfg.subdivisions, info)
    state.last_loss = float(acc[3])
    return acc


def _skip_step(state: TrainState, what: str) -> None:
    """Drop the step's gradients and say so (`what` was not finite: "loss" or "gradient")."""
    state.optimizer.zero_grad(set_to_none=True)
    state.nan_skipped += 1
    say(
        state,
        f"warning: non-finite {what} at epoch {state.epoch + 1} step {state.step}: step skipped "
        f"({state.nan_skipped} so far)",
    )


def adversarial_images(
    model: nn.Module, loss_fn: YoloLoss, images: torch.Tensor, targets: torch.Tensor, eps: float
) -> torch.Tensor:
    """Self-adversarial training's first pass: one FGSM step that raises the loss.
    images Tensor[B, 3, H, W] in [0, 1]. Returns a new Tensor[B, 3, H, W] in [0, 1]."""
    x = images.detach().clone().requires_grad_(True)
    loss, _ = loss_fn(unwrap(model)(x), targets, (int(images.shape[-2]), int(images.shape[-1])))
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()
