"""One trial of `yolo4 tune`: a short training with the trial's parameters, scored each epoch.

    trial = run_trial(base, Trial(3, {"lr": 0.02, ...}), "runs/tune/trials/003", epochs=6, report=report)

`report(epoch, fitness_so_far, history)` is called after every epoch (the sequential runner's ASHA
rule, or Ray Tune's `tune.report`); when it returns True the trial stops there (pruned). A trial
folder that already holds a `last.pt` (the search was killed during this trial) is resumed from
it rather than started again. The same function runs trials in-process and on Ray workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yolo4.training.config import TrainConfig
from yolo4.training.hooks import Hook
from yolo4.training.state import TrainState, fitness
from yolo4.training.train import train
from yolo4.tuning.search import Trial

Report = Callable[[int, float, list[dict[str, float]]], bool]  # (epoch, fitness so far, history) -> stop?
PRUNED = "pruned by ASHA"  # the start of the stop reason of a pruned trial

TRIAL_FILE = "trial.json"  # in each trial folder: index, params and parents, written before it trains


class ReportHook(Hook):
    """After each validated epoch: the best fitness so far (0.1 mAP50 + 0.9 mAP50-95) to `report`;
    a True answer stops the run (`state.stop` starts with PRUNED)."""

    def __init__(self, report: Report):
        self.report = report

    def on_epoch_end(self, state: TrainState) -> None:
        if "val/mAP50" not in state.row:
            return
        so_far = max(fitness(r) for r in state.history if "val/mAP50" in r)
        if self.report(state.epoch, so_far, state.history):
            state.stop = f"{PRUNED} after epoch {state.epoch} (fitness {so_far:.4f})"


def trial_config(base: TrainConfig, trial: Trial, trial_dir: str | Path, epochs: int) -> TrainConfig:
    """The TrainConfig of `trial`: `base` with the trial's parameters, `epochs` epochs validated
    after each one (the fitness curve ASHA needs), no darknet export, no time budget and no
    early stop on patience (ASHA decides; a trial is short)."""
    return dataclasses.replace(
        base,
        **trial.params,
        epochs=epochs,
        out=str(trial_dir),
        resume=None,
        val_every=1,
        export=False,
        time_budget_min=None,
        patience=0,
    )


def run_trial(base: TrainConfig, trial: Trial, trial_dir: str | Path, epochs: int, report: Report) -> Trial:
    """Train `trial` in `trial_dir` (resumed from its last.pt when there is one) and return it
    scored (a new Trial; status done, or pruned when `report` stopped it). Training errors
    propagate; the caller decides whether they end the search."""
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / TRIAL_FILE).write_text(
        json.dumps({"index": trial.index, "params": trial.params, "parents": trial.parents})
    )
    cfg = trial_config(base, trial, trial_dir, epochs)
    if (trial_dir / "last.pt").exists():  # killed during this trial: continue it
        cfg = dataclasses.replace(cfg, resume=str(trial_dir))
    t0 = time.time()
    result = train(cfg, hooks=[ReportHook(report)])
    if result.stopped is not None and not result.stopped.startswith(PRUNED):
        raise TrialInterrupted(f"trial {trial.index} stopped: {result.stopped}")
    return scored(trial, result.history, "pruned" if result.stopped else "done", time.time() - t0)


class TrialInterrupted(Exception):
    """A trial's training stopped for another reason than pruning (a signal, a hook): the search
    stops too, and resumes this trial next time."""


def scored(trial: Trial, history: list[dict[str, float]], status: str, time_s: float) -> Trial:
    """`trial` with its results from a training `history` (results.csv rows)."""
    rows = [r for r in history if "val/mAP50" in r]
    curve: list[float] = []
    for r in rows:
        curve.append(max(fitness(r), curve[-1]) if curve else fitness(r))
    best: dict[str, Any] = max(rows, key=fitness) if rows else {}
    return dataclasses.replace(
        trial,
        status=status,
        fitness=fitness(best) if best else math.nan,
        map50=float(best.get("val/mAP50", math.nan)),
        map=float(best.get("val/mAP50-95", math.nan)),
        epochs=len(history),
        time_s=time_s,
        curve=curve,
    )


def read_trial_file(trial_dir: Path) -> Trial | None:
    """The Trial a folder was started with (its TRIAL_FILE), or None."""
    try:
        d = json.loads((trial_dir / TRIAL_FILE).read_text())
        return Trial(int(d["index"]), dict(d["params"]), tuple(d.get("parents", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None
