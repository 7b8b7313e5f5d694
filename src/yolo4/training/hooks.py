"""Training hooks: what the loop does around its steps, each part an object with the same five
or six methods (the detectron2 pattern: a plain loop plus hooks, no trainer base class).

    class PrintLoss(Hook):
        def on_step_end(self, state: TrainState) -> None:
            if state.step % 100 == 0:
                print(state.step, state.last_loss)

    train(cfg, hooks=[PrintLoss()])

The loop calls, on every hook in order (the built-in `default_hooks(cfg)` first, then the
user's):

    on_start(state)         once, after the model, optimizer and counters are built (and restored
                            on resume; `state.resumed` then holds the checkpoint, for the hooks'
                            own parts, and is None again after on_start)
    on_epoch_start(state)   before an epoch's loader is built; `state.epoch` epochs are done
    on_step_start(state)    before each optimizer step (`state.step` steps done)
    on_step_end(state)      after each step; `state.step_ok` is False when it was skipped for a
                            non-finite loss
    on_epoch_end(state)     after an epoch: `state.epoch` counts it, `state.row` is its results row
                            (train losses, lr, ...) for the hooks to add to
    on_end(state)           once, after the last epoch (or a stop)

A hook stops the run by setting `state.stop = "reason"`: from on_step_start/on_step_end the
loop leaves after that step, and the cut epoch is not counted yet (no on_epoch_end); last.pt
then holds the run at that step, and `--resume` continues the epoch from the next step with
the batches, learning rates and random state the uninterrupted run would have had. From
on_epoch_end it stops after that epoch's hooks. Under DDP a stop on one process stops all of
them. on_end runs in both cases. SIGTERM (what cluster schedulers send before SIGKILL) and
SIGINT (Ctrl-C) stop the run this way (`StopOnSignal`), and it prints the command that resumes it.

Built-in hooks (`default_hooks`): the lr and DropBlock schedules, EMA, the time budget (the
epoch planner), precise BN + validation, logging (tqdm, results.csv, TensorBoard,
results.png), checkpoints (last.pt / best.pt, atomic; last.pt also when a run stops within an
epoch), the darknet export of the best model, and the stop on SIGTERM / SIGINT.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from yolo4.training.build import autocast_dtype, set_drop_scale
from yolo4.training.checkpoint import CheckpointError, rng_state, save_checkpoint, trained_network
from yolo4.training.config import TrainConfig, resolved
from yolo4.training.defaults import replan_defaults
from yolo4.training.distributed import broadcast_object
from yolo4.training.ema import ModelEMA
from yolo4.training.schedule import ScheduleConfig, lr_at
from yolo4.training.state import TrainState, best_row, epoch_img_size, fitness, progress_note, val_size

log = logging.getLogger(__name__)


class Hook:
    """A training hook: override the methods you need; the others do nothing."""

    def on_start(self, state: TrainState) -> None:
        pass

    def on_epoch_start(self, state: TrainState) -> None:
        pass

    def on_step_start(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_end(self, state: TrainState) -> None:
        pass


def say(state: TrainState, msg: str) -> None:
    """A line on stderr from the main process (through tqdm, so that progress bars stay whole)."""
    if state.dist.is_main:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)


def default_hooks(cfg: TrainConfig) -> list[Hook]:
    """The built-in hooks `cfg` asks for, in the order the loop calls them."""
    hooks: list[Hook] = [ScheduleHook()]
    if cfg.ema:
        hooks.append(EMAHook())
    if cfg.time_budget_min:
        hooks.append(TimeBudgetHook())
    # the planner re-plans before validation (a run cut to this epoch still validates it);
    # the log row (with time_s) is complete before the checkpoint saves the history
    hooks += [EvalHook(), LogHook(), CheckpointHook()]
    if cfg.patience > 0:
        hooks.append(EarlyStopHook(cfg.patience))
    if cfg.export:
        if cfg.qat:
            from yolo4.training.qat import QatExportHook

            hooks.append(QatExportHook())
        else:
            hooks.append(ExportHook())
    hooks.append(StopOnSignal())  # last: its on_end message follows the checkpoint and the export
    return hooks


# ------------------------------------------------------------------ schedules
class ScheduleHook(Hook):
    """Before each step: the learning rate (darknet burn-in, then cfg.policy over the planned
    steps) and the DropBlock rate (ramped up over the first half of the planned steps). Both
    follow the plan: `state.epochs` and the warm-up of `state.cfg`, which a re-plan may change."""

    def on_start(self, state: TrainState) -> None:
        self.cfg: TrainConfig | None = None

    def on_step_start(self, state: TrainState) -> None:
        if state.cfg is not self.cfg:  # (the time budget replaces the config when it re-plans the warm-up)
            cfg = self.cfg = state.cfg
            self.schedule = ScheduleConfig(
                policy=cfg.policy,
                burn_in=resolved(cfg.burn_in, "burn_in"),
                burn_in_power=resolved(cfg.burn_in_power, "burn_in_power"),
                steps=cfg.steps,
                scales=cfg.scales,
                final_ratio=cfg.final_lr_ratio,
                sgdr_cycle=max(1, int(cfg.sgdr_cycle_epochs * state.steps_per_epoch)),
                sgdr_mult=cfg.sgdr_mult,
            )
        lr = lr_at(state.step, state.base_lr, state.total_steps, self.schedule)
        for g in state.optimizer.param_groups:
            g["lr"] = lr
        if state.cfg.dropblock:
            set_drop_scale(state.net, min(1.0, 2.0 * state.step / max(state.total_steps, 1)))


# ------------------------------------------------------------------ EMA
class EMAHook(Hook):
    """Keeps `state.ema`, the exponential moving average of the weights (see `ModelEMA`),
    updated after every applied step; validation, best.pt and the export use it. Its decay and
    ramp are `state.cfg`'s, which a re-plan of the run may change."""

    def on_start(self, state: TrainState) -> None:
        cfg = state.cfg
        state.ema = ModelEMA(state.net, resolved(cfg.ema_decay, "ema_decay"), resolved(cfg.ema_tau, "ema_tau"))
        if state.resumed is not None and state.resumed.get("ema"):
            state.ema.load_state_dict(state.resumed["ema"])

    def on_step_end(self, state: TrainState) -> None:
        if state.step_ok and state.ema is not None:
            state.ema.decay = resolved(state.cfg.ema_decay, "ema_decay")
            state.ema.tau = resolved(state.cfg.ema_tau, "ema_tau")
            state.ema.update(state.net)


# ------------------------------------------------------------------ time budget
class TimeBudgetHook(Hook):
    """Plans `state.epochs` (at most cfg.epochs) so that the run fits cfg.time_budget_min (see
    `plan_epochs`): first from the speed of the first epoch's first steps (so that the warm-up,
    the schedules and the EMA horizon are those of the run that fits, not of cfg.epochs), then
    after every epoch. The plan-derived defaults (`state.planned`: warm-up, EMA horizon) follow
    each re-plan (`yolo4.training.defaults.replan_defaults`). Planned in a fresh run only: a
    resumed run keeps the plan its checkpoint holds. Must come before the validation and
    checkpoint hooks."""

    PROBE_SKIP = 2  # the first steps pay one-off costs (oneDNN primitives, caches): not timed

    def on_start(self, state: TrainState) -> None:
        self.active = state.resumed is None
        self.t_run = time.time()
        self.max_epochs = state.epochs
        self.times: list[tuple[float, bool]] = []  # (seconds start to start, small size) per epoch run here
        self.t_last = self.t_run
        # the early plan: after a tenth of the first epoch (at least 8 steps), if it has that many
        self.probe_step = max(8, state.steps_per_epoch // 10)
        self.t_probe = 0.0

    def on_epoch_start(self, state: TrainState) -> None:
        t0 = time.time()
        if self.times:  # the previous epoch's time now includes its validation and checkpoints
            self.times[-1] = (t0 - self.t_last, self.times[-1][1])
        self.t_last = t0
        self.small = state.img_size() != state.cfg.img_size

    def on_step_end(self, state: TrainState) -> None:
        if not self.active or state.epoch > 0 or self.probe_step >= state.steps_per_epoch:
            return
        if state.epoch_step == self.PROBE_SKIP:
            self.t_probe = time.time()
        elif state.epoch_step == self.probe_step:
            per_step = (time.time() - self.t_probe) / (self.probe_step - self.PROBE_SKIP)
            epoch_s = (self.t_probe - self.t_last) + per_step * (state.steps_per_epoch - self.PROBE_SKIP)
            spent = (self.t_last - self.t_run) + epoch_s  # as if the first epoch were done
            self._replan(state, plan_epochs(state.cfg, [(epoch_s, self.small)], spent, self.max_epochs))

    def on_epoch_end(self, state: TrainState) -> None:
        self.times.append((time.time() - self.t_last, self.small))
        if self.active:
            spent = time.time() - self.t_run
            self._replan(state, plan_epochs(state.cfg, self.times, spent, self.max_epochs, state.epochs))

    def _replan(self, state: TrainState, fit: int) -> None:
        fit = broadcast_object(fit, state.dist)
        if fit == state.epochs:
            return
        budget = state.cfg.time_budget_min
        changes = replan_defaults(state.cfg, state.planned, fit, state.steps_per_epoch, state.step)
        note = ""
        if changes:
            state.cfg = dataclasses.replace(state.cfg, **changes)
            if "burn_in" in changes:
                note += f"; warm-up {changes['burn_in']} steps"
            if "ema_decay" in changes:
                note += f"; EMA over the last ~{1 / (1 - changes['ema_decay']):.0f} steps"
        say(state, f"time budget {budget:g} min: training {fit} epochs instead of {state.epochs}{note}")
        state.epochs = fit


def plan_epochs(
    cfg: TrainConfig,
    epoch_times: Sequence[tuple[float, bool]],
    spent_s: float,
    max_epochs: int,
    current: int | None = None,
) -> int:
    """The most epochs in all (at least those done, at most `max_epochs`) whose predicted time fits
    `cfg.time_budget_min`, when `spent_s` seconds have gone.

    Args:
        epoch_times: (seconds, ran at small_img_size) of every epoch done so far.
        current: the plan in force, if any: it grows only when the longer plan still leaves half
            an epoch to spare (so that epoch times near the edge do not flip the plan, and with it
            the lr schedule, back and forth every epoch); it shrinks as soon as it does not fit.
    A small epoch is predicted by the median small one done, a full-size one by the median
    full-size one (a passing slowdown of the machine does not cut the run); until one of a kind
    has run, from the other kind scaled by the ratio of input areas (which overestimates
    full-size epochs, the safe side).
    """
    budget_s = (cfg.time_budget_min or 0.0) * 60
    done = len(epoch_times)
    small_t = [t for t, small in epoch_times if small]
    full_t = [t for t, small in epoch_times if not small]
    area = (cfg.small_img_size / cfg.img_size) ** 2 if cfg.small_img_size else 1.0
    t_full = float(np.median(full_t)) if full_t else float(np.median(small_t)) / area
    t_small = float(np.median(small_t)) if small_t else t_full * area
    best = done
    for n in range(done + 1, max_epochs + 1):
        # once a full-size epoch has run, no small one follows (TrainState.img_size)
        n_small = 0 if full_t else sum(epoch_img_size(cfg, e, n) != cfg.img_size for e in range(done, n))
        spare = 0.5 * t_full if current is not None and n > current else 0.0
        if spent_s + n_small * t_small + (n - done - n_small) * t_full + spare <= budget_s:
            best = n
    return best


# ------------------------------------------------------------------ validation
class EvalHook(Hook):
    """Every `cfg.val_every` epochs and after the last planned one (main process): precise BN
    (`cfg.precise_bn_batches` train batches) then COCO validation of `state.eval_model`; adds
    val/mAP50 and val/mAP50-95 to the epoch's row. A QAT run also validates before its first
    step (epoch 0)."""

    def on_start(self, state: TrainState) -> None:
        """A QAT run validates its calibrated int8 model before the first step (the PTQ point):
        row "epoch 0" of the history, which best.pt keeps unless a trained epoch beats it."""
        if not state.cfg.qat or state.history or not state.dist.is_main:  # (a resumed run has done this)
            return
        state.history.append({"epoch": 0, **validate_model(state)})
        say(
            state,
            f"epoch 0 (the calibrated int8 model before any step, i.e. post-training quantisation): mAP50-95 "
            f"{state.row['val/mAP50-95']:.4f}, mAP50 {state.row['val/mAP50']:.4f}; best.pt keeps it unless an "
            "epoch beats it",
        )

    def on_epoch_end(self, state: TrainState) -> None:
        cfg = state.cfg
        if not state.dist.is_main or not (state.epoch % cfg.val_every == 0 or state.epoch == state.epochs):
            return
        state.row.update(validate_model(state))


def validate_model(state: TrainState) -> dict[str, float]:
    """Precise BN (`cfg.precise_bn_batches` train batches) then COCO validation of
    `state.eval_model`: {"val/mAP50", "val/mAP50-95"}. The model is left in train mode."""
    from yolo4.training.validation import recompute_bn_stats, validate

    cfg = state.cfg
    net = state.eval_model
    if cfg.precise_bn_batches > 0 and state.bn_batches is not None:
        recompute_bn_stats(net, state.bn_batches(), autocast_dtype(cfg, state.device))
    m = validate(
        net, state.val_set, state.names, val_size(cfg), state.device, cfg.val_postprocess, progress=cfg.progress
    )
    state.model.train()
    return {"val/mAP50": float(m.map50), "val/mAP50-95": float(m.map)}


# ------------------------------------------------------------------ logging
class LogHook(Hook):
    """Main process: a tqdm bar per epoch; after each epoch its time (row["time_s"], start of the
    epoch to the end of validation), results.csv, TensorBoard scalars (when tensorboard is
    installed) and a one-line summary; results.png at the end and after an epoch when the last
    drawing is PLOT_EVERY_S old (a drawing costs ~1 s: on a small dataset, as much as an epoch)."""

    PLOT_EVERY_S = 60.0

    def on_start(self, state: TrainState) -> None:
        self.enabled = state.dist.is_main
        self.csv = state.out_dir / "results.csv"
        self.png = state.out_dir / "results.png"
        self.tb = None
        self.bar: Any = None
        self.plotted_at = -math.inf
        if self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(state.out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed
                self.tb = None

    def on_epoch_start(self, state: TrainState) -> None:
        from tqdm import tqdm

        self.t0 = time.time()
        self.bar = tqdm(
            total=state.steps_per_epoch,
            initial=state.epoch_step,  # (a run resumed within the epoch)
            desc=f"epoch {state.epoch + 1}/{state.epochs}",
            unit="step",
            disable=not (state.cfg.progress and self.enabled),
            file=sys.stderr,
            leave=False,
        )

    def on_step_end(self, state: TrainState) -> None:
        self.bar.update()
        if state.step_ok:
            self.bar.set_postfix(loss=f"{state.last_loss:.3f}", lr=f"{state.optimizer.param_groups[0]['lr']:.2e}")

    def on_epoch_end(self, state: TrainState) -> None:
        self._close_bar()
        if not self.enabled:
            return
        row = state.row
        row["time_s"] = time.time() - self.t0
        self._write(state.history)
        val = f", mAP50-95 {row['val/mAP50-95']:.4f}, mAP50 {row['val/mAP50']:.4f}" if "val/mAP50" in row else ""
        note = progress_note(state.history)
        say(
            state,
            f"epoch {state.epoch}/{state.epochs}: loss {row['train/loss']:.4f} (box {row['train/box']:.4f} "
            f"obj {row['train/obj']:.4f} cls {row['train/cls']:.4f}){val}, {row['time_s']:.0f}s"
            + (f"; {note}" if note else ""),
        )

    def on_end(self, state: TrainState) -> None:
        self._close_bar()
        if self.enabled and state.history:
            self._plot()
        best = best_row(state.history)
        if best is not None and self.enabled:
            say(
                state,
                f"best epoch {int(best['epoch'])} of {state.epoch} (best.pt): mAP50-95 {best['val/mAP50-95']:.4f}, "
                f"mAP50 {best['val/mAP50']:.4f}",
            )
        if self.tb is not None:
            self.tb.close()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _write(self, history: list[dict[str, float]]) -> None:
        keys = list(history[-1])  # the latest row is a whole one (a QAT run's epoch 0 has only its validation)
        for row in history:
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
        if time.monotonic() - self.plotted_at >= self.PLOT_EVERY_S:
            self._plot()

    def _plot(self) -> None:
        self.plotted_at = time.monotonic()
        try:
            from yolo4.viz.plots import plot_training_curves

            plot_training_curves(self.csv, self.png)
        except Exception as e:  # a plot must never stop training
            log.warning("could not draw the training curves: %s", e)


# ------------------------------------------------------------------ checkpoints
class CheckpointHook(Hook):
    """After every epoch (main process): last.pt (the previous one kept as last.prev.pt), and
    best.pt when the epoch's fitness (0.1 mAP50 + 0.9 mAP50-95) beats the best so far; both
    written atomically (see `save_checkpoint`). When a run stops within an epoch: last.pt at
    that step. A write that fails (a full disk) keeps the previous file and ends the run with
    a CheckpointError that says how to resume."""

    def on_start(self, state: TrainState) -> None:
        """A row validated before the first step (EvalHook's epoch 0 of a QAT run) is best.pt so far."""
        if state.dist.is_main and state.epoch == 0 and state.history and fitness(state.row) > state.best_fitness:
            state.best_fitness = fitness(state.row)
            _save(state, checkpoint_dict(state), "best.pt", keep_previous=False)

    def on_end(self, state: TrainState) -> None:
        if state.dist.is_main and state.mid_epoch:
            _save(state, checkpoint_dict(state), "last.pt")

    def on_epoch_end(self, state: TrainState) -> None:
        if not state.dist.is_main:
            return
        improved = "val/mAP50" in state.row and fitness(state.row) > state.best_fitness
        if improved:
            state.best_fitness = fitness(state.row)
        ckpt = checkpoint_dict(state)
        _save(state, ckpt, "last.pt")
        if improved:
            _save(state, ckpt, "best.pt", keep_previous=False)


def _save(state: TrainState, ckpt: dict[str, Any], name: str, keep_previous: bool = True) -> None:
    try:
        save_checkpoint(ckpt, state.out_dir / name, keep_previous=keep_previous)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}. The run stops here: free some space, then `yolo4 train --resume {state.out_dir}` continues "
            "from the last checkpoint written"
        ) from e


def checkpoint_dict(state: TrainState) -> dict[str, Any]:
    """Everything `--resume` needs, as tensors and primitives (`torch.load(weights_only=True)`).
    "config" is the user's config; "epochs" the planned epoch count."""
    from yolo4.darknet import format_cfg

    return {
        "model": state.net.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "epoch": state.epoch,
        "epochs": state.epochs,
        "step": state.step,
        "best_fitness": state.best_fitness,
        "history": state.history,
        "nan_skipped": state.nan_skipped,
        "config": state.cfg.to_dict(),
        "cfg_text": format_cfg(state.net.spec),
        "names": list(state.names),
        "rng": rng_state(),
        # a run stopped within an epoch: steps of it done, and their loss sums (box, obj, cls, total)
        "epoch_step": state.epoch_step if state.mid_epoch else 0,
        "epoch_loss": state.epoch_loss.tolist() if state.mid_epoch and state.epoch_loss is not None else None,
        "epoch_counted": state.epoch_counted if state.mid_epoch else 0,
        "qat": _qat_structure(state),  # where a QAT model's quantisers sit (None: a float model)
    }


def _qat_structure(state: TrainState) -> dict[str, Any] | None:
    if not state.cfg.qat:
        return None
    from yolo4.export.qat import qat_config

    return qat_config(state.net)


# ------------------------------------------------------------------ early stopping
class EarlyStopHook(Hook):
    """Stops the run when `patience` epochs have gone by since the best validated one (by
    `fitness`: mAP50-95 first, mAP50 beside it); best.pt keeps that epoch."""

    def __init__(self, patience: int):
        self.patience = int(patience)

    def on_epoch_end(self, state: TrainState) -> None:
        best = best_row(state.history)
        if best is not None and state.epoch - int(best["epoch"]) >= self.patience and state.epoch < state.epochs:
            state.stop = (
                f"early stop: no better mAP50-95 for {self.patience} epochs (patience); best epoch "
                f"{int(best['epoch'])}: mAP50-95 {best['val/mAP50-95']:.4f}, mAP50 {best['val/mAP50']:.4f}"
            )


# ------------------------------------------------------------------ export
class ExportHook(Hook):
    """At the end (main process): best.pt's model (its EMA weights when there are any) as
    darknet best.cfg + best.weights at the validation size, and names.txt; sets state.best_files."""

    def on_end(self, state: TrainState) -> None:
        best = state.out_dir / "best.pt"
        if not state.dist.is_main or not best.exists():
            return
        from yolo4.export.darknet import export_darknet

        net = trained_network(best, source=str(state.out_dir / "best.cfg"))
        (state.out_dir / "names.txt").write_text("\n".join(state.names) + "\n")
        size = val_size(state.cfg)
        state.best_files = export_darknet(net, state.out_dir / "best.cfg", img_size=(size, size))
        say(state, f"best model exported to {state.best_files[0]} + {state.best_files[1]}")


# ------------------------------------------------------------------ signals
class StopOnSignal(Hook):
    """SIGTERM (a cluster scheduler's warning before SIGKILL) or SIGINT (Ctrl-C) stops the run
    after the step in progress: `state.stop` and `state.signal` are set, the checkpoint hook
    writes last.pt at that step, and on_end prints the command that resumes the run. The
    handlers are installed for the run only (and only from the main thread, where Python
    allows it), until the loop has run every hook's on_end: a signal during the end of a run
    whose steps are all done lets the end (best model's exports) finish, and the run exits as
    completed; after the first signal the default handling is back, so a second one acts at
    once."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def on_start(self, state: TrainState) -> None:
        import signal
        import threading

        self.received: int | None = None
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            log.debug("not the main thread: SIGTERM/SIGINT keep their handlers")
            return
        for name in self.SIGNALS:
            num = getattr(signal, name, None)
            if num is not None:
                self.previous[num] = signal.signal(num, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.received is None:
            self.received = signum
            signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))  # a second one acts at once

    def on_step_end(self, state: TrainState) -> None:
        if self.received is not None and state.stop is None:
            import signal

            state.signal = self.received
            state.stop = f"{signal.Signals(self.received).name} received"

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch < state.epochs:  # (a signal during validation: stop after the epoch's checkpoint)
            self.on_step_end(state)

    def restore(self) -> None:
        """Put the handlers back as they were before the run (the loop calls it however the run ends)."""
        import signal

        for num, handler in getattr(self, "previous", {}).items():
            signal.signal(num, handler)
        self.previous = {}

    def on_end(self, state: TrainState) -> None:
        import signal

        if state.signal is None:  # (the handlers stay until the loop restores them after every on_end)
            return
        where = f"epoch {state.epoch + 1}, step {state.epoch_step}" if state.mid_epoch else f"epoch {state.epoch}"
        say(
            state,
            f"{signal.Signals(state.signal).name}: stopped after {where} ({state.step} steps in all); "
            f"{state.out_dir / 'last.pt'} holds the run. Resume it with:\n  yolo4 train --resume {state.out_dir}",
        )
