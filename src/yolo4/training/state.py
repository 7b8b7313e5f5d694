"""What the training loop and its hooks share: `TrainState`, and the pure rules every part of
a run agrees on (the input size of an epoch, the validation size, what `best.pt` maximises)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from yolo4.ops.losses import YoloLoss
from yolo4.training.config import TrainConfig
from yolo4.training.distributed import DistInfo
from yolo4.training.ema import ModelEMA, unwrap

if TYPE_CHECKING:
    from yolo4.darknet import Darknet


@dataclass
class TrainState:
    """The live state of a run. `cfg` is the user's config and is never changed during the run;
    what the run decides as it goes (the planned epoch count, the counters) lives here."""

    cfg: TrainConfig
    out_dir: Path
    model: nn.Module  # possibly DDP-wrapped; `state.net` is the Darknet inside
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # CUDA fp16 only
    device: torch.device
    dist: DistInfo
    names: list[str]
    loss_fn: YoloLoss
    base_lr: float  # lr at the global batch (cfg.lr * batch / lr_batch)
    epochs: int  # the planned epoch count: cfg.epochs, or fewer when the time budget cuts the run
    steps_per_epoch: int
    val_set: Any = None  # the dataset each epoch's validation runs on
    bn_batches: Callable[[], Iterable[torch.Tensor]] | None = None  # un-augmented train images, for precise BN
    ema: ModelEMA | None = None  # set by the EMA hook
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done (skipped ones not counted)
    epoch_step: int = 0  # steps of the current epoch run so far (skipped ones counted)
    step_ok: bool = True  # the last step was applied (False: skipped for a non-finite loss)
    best_fitness: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)  # one row per completed epoch
    nan_skipped: int = 0
    last_loss: float = math.nan  # total loss per image of the last applied step
    epoch_loss: torch.Tensor | None = None  # Tensor[4] sums over the epoch's applied steps: box, obj, cls, total
    epoch_counted: int = 0  # applied steps summed in epoch_loss
    resumed: dict[str, Any] | None = None  # the checkpoint resumed from; hooks read their part in on_start
    stop: str | None = None  # set by a hook to end the run: the reason, printed
    signal: int | None = None  # the signal (SIGTERM, SIGINT) that stopped the run, if one did
    best_files: tuple[Path, Path] | None = None  # (cfg, weights) exported at the end
    run_lock: Any = None  # the RunLock on out_dir (main process), released when the run ends
    planned: frozenset[str] = frozenset()  # cfg fields derived from the plan (warm-up, EMA): a re-plan re-derives them

    @property
    def net(self) -> Darknet:
        """The Darknet being trained (inside the DDP wrapper, if any)."""
        return cast("Darknet", unwrap(self.model))

    @property
    def eval_model(self) -> nn.Module:
        """What is validated, checkpointed as best and exported: the EMA model when there is one."""
        return self.ema.module if self.ema is not None else self.net

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the planned run (the schedules' horizon)."""
        return self.epochs * self.steps_per_epoch

    @property
    def mid_epoch(self) -> bool:
        """Whether the run stands inside an epoch (stopped, or resumed, after some of its steps)."""
        return 0 < self.epoch_step < self.steps_per_epoch

    @property
    def row(self) -> dict[str, float]:
        """The current epoch's results row (on_epoch_end hooks add their values to it)."""
        return self.history[-1]

    def img_size(self, epoch: int | None = None) -> int:
        """The training input size of `epoch` (default: the current one) under the planned epochs.
        Once an epoch has run at full size the rest do too (a re-plan that adds epochs moves the
        switch later, but the run does not go back to the small size)."""
        e = self.epoch if epoch is None else epoch
        if any(r.get("epoch", math.inf) <= e and r.get("img_size") == self.cfg.img_size for r in self.history):
            return self.cfg.img_size
        return epoch_img_size(self.cfg, e, self.epochs)


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


def fitness(row: dict[str, float]) -> float:
    """What `best.pt` maximises: 0.1 * mAP50 + 0.9 * mAP50-95 (NaN or not validated: -1)."""
    f = 0.1 * row.get("val/mAP50", math.nan) + 0.9 * row.get("val/mAP50-95", math.nan)
    return f if math.isfinite(f) else -1.0


def best_value(history: list[dict[str, float]], key: str) -> float:
    """The largest finite `key` over the rows (NaN when there is none)."""
    vals = [r[key] for r in history if key in r and math.isfinite(r[key])]
    return max(vals) if vals else math.nan


def best_row(history: list[dict[str, float]]) -> dict[str, float] | None:
    """The validated row of the highest `fitness` (the first of equals; None before any)."""
    rows = [r for r in history if fitness(r) > -1.0]
    return max(rows, key=fitness) if rows else None


def progress_note(history: list[dict[str, float]]) -> str:
    """Whether the last row (validated) beat every earlier one on `fitness`: "best so far", or
    how many epochs have gone without a better one and which epoch holds the best. "" when the
    last row was not validated."""
    if not history or fitness(history[-1]) <= -1.0:
        return ""
    best = best_row(history)
    assert best is not None
    if best is history[-1]:
        return "best so far"
    since = int(history[-1]["epoch"] - best["epoch"])
    return (
        f"no better for {since} epoch{'s' * (since != 1)} (best: epoch {int(best['epoch'])}, "
        f"mAP50-95 {best['val/mAP50-95']:.4f}, mAP50 {best['val/mAP50']:.4f})"
    )
