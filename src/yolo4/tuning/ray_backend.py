"""`yolo4 tune` on Ray Tune: the genetic search as a Ray Tune `Searcher`, ASHA as Ray's
`ASHAScheduler`, each trial a Ray task running `yolo4.tuning.trial.run_trial`.

Only imported when Ray is installed (`pip install "yolo4[tune]"`). Without `ray_address` a
local Ray instance is started with this machine's cores (no dashboard) and shut down at the
end; with one, the trials go to that cluster, whose workers must see the same dataset paths
and the search's folder (a shared file system), since each trial writes its run folder there.

Ray's memory monitor kills workers when the whole machine runs low on memory (others' processes
count too), and Ray Tune 2.60 then stops the whole experiment with an exception: the search
ends with that reason, its finished trials are in tune.csv, and the same command resumes it
(`RAY_memory_usage_threshold`, 0.95 by default, moves the limit).

The driver keeps the record: the searcher's `on_trial_complete` writes tune.csv, tune.png and
best.yaml after every trial, exactly as the in-process runner does. Each epoch a trial reports
its best fitness so far (`fitness`, ASHA's metric; `epoch`, its time attribute), that epoch's
mAP50/mAP50-95, and its fitness curve; a failure is reported as a result with `error`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.tuning.run import Search, from_ray_result
from yolo4.tuning.search import Trial
from yolo4.tuning.trial import run_trial, scored


class GeneticSearcher(Searcher):
    """Ray Tune's view of `Search`: `suggest` proposes the next trial (or a cut one again),
    `on_trial_complete` records it."""

    def __init__(self, search: Search):
        super().__init__(metric="fitness", mode="max")
        self.search = search
        self.running: dict[str, Trial] = {}  # Ray trial id -> our trial
        self.stopped: str | None = None

    def suggest(self, trial_id: str) -> dict | None:  # or Searcher.FINISHED, a str Ray's annotation omits
        if self.search.budget_spent():
            self.stopped = f"time budget of {self.search.settings.budget_min:g} min spent"
            return Searcher.FINISHED  # type: ignore[return-value]
        trial = self.search.next_trial(list(self.running.values()))
        if trial is None:
            return Searcher.FINISHED  # type: ignore[return-value]
        self.running[trial_id] = trial
        self.search_describe(trial)
        return {"index": trial.index, "params": trial.params, "parents": list(trial.parents)}

    def search_describe(self, trial: Trial) -> None:
        from tqdm import tqdm

        tqdm.write(self.search.describe(trial), file=sys.stderr)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self.running.pop(trial_id, None)
        if trial is not None:
            self.search.finish(from_ray_result(trial, result, error, self.search.settings.epochs_per_trial))


class ReferenceASHA(ASHAScheduler):
    """Ray's ASHA, except that trial 0 (the defaults, the figure to beat) is never stopped; its
    fitness still counts at the rungs."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and trial.config.get("index") == 0:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def _trainable(config: dict[str, Any], base: dict[str, Any], epochs: int, trial_dir: str) -> None:
    """One trial on a Ray worker: train, and report every epoch to Ray Tune."""
    trial = Trial(int(config["index"]), dict(config["params"]), tuple(config["parents"]))
    cfg = TrainConfig.from_dict(base)

    def report(epoch: int, fitness: float, history: list[dict[str, float]]) -> bool:
        now = scored(trial, history, "running", 0.0)
        tune.report(
            {
                "epoch": epoch,
                "fitness": fitness,
                "mAP50": now.map50,
                "mAP50-95": now.map,
                "curve": " ".join(f"{c:.5f}" for c in now.curve),
            }
        )
        return False  # ASHA's decisions are Ray's: it stops the trial's actor

    try:
        run_trial(cfg, trial, Path(trial_dir) / f"{trial.index:03d}", epochs, report)
    except Exception as e:  # recorded by the driver as a failed trial; the search goes on
        text = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        tune.report({"epoch": 0, "fitness": -1.0, "mAP50": 0.0, "mAP50-95": 0.0, "curve": "", "error": text})


def run_on_ray(search: Search) -> str | None:
    """Run the remaining trials of `search` on Ray Tune. Returns why it stopped early (None:
    all trials ran). A failed trial 0 (the defaults) raises Yolo4Error: the base config is wrong."""
    s = search.settings
    started = not ray.is_initialized()
    if started:
        if s.ray_address:
            ray.init(address=s.ray_address, log_to_driver=True)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = s.gpus_per_trial
        if gpus is None:
            import torch

            gpus = 1.0 if torch.cuda.is_available() and search.base.device in ("auto", "cuda") else 0.0
        concurrency = s.concurrency or max(1, cpus // s.cpus_per_trial)
        base = search.base.to_dict()
        if base.get("threads") is None:
            base["threads"] = s.cpus_per_trial
        trainable = tune.with_resources(
            tune.with_parameters(
                _trainable, base=base, epochs=s.epochs_per_trial, trial_dir=str((search.out / "trials").resolve())
            ),
            {"cpu": s.cpus_per_trial, "gpu": gpus},
        )
        asha = s.asha
        scheduler = (
            ReferenceASHA(
                time_attr="epoch",
                metric="fitness",
                mode="max",
                max_t=s.epochs_per_trial,
                grace_period=asha.grace,
                reduction_factor=asha.reduction,
            )
            if asha is not None
            else FIFOScheduler()
        )
        searcher = GeneticSearcher(search)
        remaining = s.trials - len(search.finished)
        if remaining <= 0:
            return None
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                scheduler=scheduler,
                num_samples=remaining,
            ),
            run_config=tune.RunConfig(name="ray", storage_path=str(search.out.resolve()), verbose=0, log_to_file=True),
        )
        try:
            tuner.fit()
        except Exception as e:  # Ray Tune itself failed (e.g. Ray 2.60 on a worker its memory monitor killed)
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            return f"Ray Tune stopped ({reason}); run the same command again to resume"
    finally:
        if started:
            ray.shutdown()
    first = next((t for t in search.finished if t.index == 0), None)
    if first is not None and first.status == "failed":
        raise Yolo4Error(f"trial 0 (the defaults) failed on Ray: {first.error}")
    return searcher.stopped
