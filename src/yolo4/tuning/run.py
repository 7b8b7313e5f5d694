"""`yolo4 tune`: evolve the training hyper-parameters of a model on a dataset (the YOLOv4 paper's
"optimal hyper-parameters" freebie) and write the best as a config for `yolo4 train --config`.

    result = run_tune("data.yaml", model="yolov4-tiny", trials=30, epochs_per_trial=10, img_size=256)
    result.best.params, result.best_yaml      # -> yolo4 train --config runs/tune/best.yaml --epochs 100

Each trial is a short training (`yolo4.tuning.trial`) scored by its best validation fitness
(0.1 mAP50 + 0.9 mAP50-95); trial 0 trains the defaults of the run (with the given options), and
every later one a mutated child of the best trials so far (`yolo4.tuning.search.GeneticSearch`).
ASHA stops trials that fall behind at its rung epochs. Trials run on Ray Tune when it is
installed (`pip install "yolo4[tune]"`: a local Ray instance using every core, or a cluster at
`ray_address`), else one after another in this process; both write the same files:

    OUT/tune.csv      every finished trial (the record a resumed search continues from)
    OUT/tune.png      fitness per trial, and each parameter against fitness
    OUT/best.yaml     the best trial's configuration (data, model, your options, its parameters)
    OUT/search.json   what the search is (base config, space, epochs per trial): a resume checks it
    OUT/trials/NNN/   each trial's run folder (results.csv, last.pt, best.pt, trial.json)

Running the same command again resumes: finished trials are read from tune.csv and not run
again, a trial that was cut continues from its last.pt, and `trials` counts them all (raise it
to search further). `budget_min` bounds the wall time: no trial starts once it is spent.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.tuning.record import RUN_FIELDS, read_csv, set_options, write_best_yaml, write_csv
from yolo4.tuning.search import Asha, GeneticSearch, Trial, best_trial
from yolo4.tuning.space import YOLO_KEYS, SearchSpace, load_space, start_values
from yolo4.tuning.trial import Report, TrialInterrupted, read_trial_file, run_trial

BACKENDS = ("auto", "ray", "local")


@dataclass
class TuneSettings:
    """How the search runs (what each trial trains is the base TrainConfig)."""

    trials: int = 30  # trials in all, counting those of earlier sessions of this search
    epochs_per_trial: int = 10
    budget_min: float | None = None  # wall-clock minutes of this session; no trial starts after
    space: str | None = None  # YAML file of fields and ranges (None: yolo4.tuning.space.DEFAULT_SPACE)
    out: str = "runs/tune"
    backend: str = "auto"  # auto (Ray when installed) | ray | local (in this process, one at a time)
    ray_address: str | None = None  # an existing Ray cluster (None: start a local instance)
    cpus_per_trial: int = 1  # Ray: CPU cores (and torch threads) per trial
    gpus_per_trial: float | None = None  # Ray: GPUs per trial (None: 1 when this machine has CUDA, else 0)
    concurrency: int | None = None  # Ray: trials at once (None: the cluster's CPUs / cpus_per_trial)
    prune: bool = True  # ASHA early stopping
    grace_epochs: int | None = None  # ASHA's first rung (None: half of epochs_per_trial, at least 1: the
    # first epochs of a short trial are mostly warm-up and say little about where it ends)
    reduction_factor: float = 3.0  # ASHA keeps the best 1/reduction_factor at each rung
    top_k: int = 5  # parents come from this many best trials
    mutation_prob: float = 0.5  # chance that a gene mutates
    mutation_sigma: float = 0.15  # a mutation's step, as a fraction of the range

    def check(self) -> None:
        if self.trials < 1 or self.epochs_per_trial < 1:
            raise Yolo4Error(
                f"tune: trials ({self.trials}) and epochs per trial ({self.epochs_per_trial}) must be >= 1"
            )
        if self.backend not in BACKENDS:
            raise Yolo4Error(f"tune: backend '{self.backend}' is not one of {', '.join(BACKENDS)}")
        if self.budget_min is not None and self.budget_min <= 0:
            raise Yolo4Error(f"tune: the time budget must be positive, got {self.budget_min:g} min")
        if not (0 < self.mutation_prob <= 1 and self.mutation_sigma > 0 and self.reduction_factor > 1):
            raise Yolo4Error("tune: mutation_prob in (0, 1], mutation_sigma > 0 and reduction_factor > 1")
        if self.cpus_per_trial < 1 or self.top_k < 1:
            raise Yolo4Error("tune: cpus_per_trial and top_k must be >= 1")

    @property
    def asha(self) -> Asha | None:
        if not self.prune:
            return None
        grace = self.grace_epochs or max(1, self.epochs_per_trial // 2)
        return Asha(grace, self.reduction_factor, self.epochs_per_trial)


@dataclass
class TuneResult:
    """What a search left: every finished trial, the best one, and its files."""

    out_dir: Path
    trials: list[Trial]
    best: Trial | None
    csv: Path
    png: Path | None
    best_yaml: Path | None
    backend: str
    base: TrainConfig  # what every trial trains, before its parameters (the defaults with the options)
    stopped: str | None = None  # why it ended before `trials` (the time budget, an interrupted trial)


class Search:
    """The state both runners share: the finished trials, the proposals, the files."""

    def __init__(self, base: TrainConfig, space: SearchSpace, start: dict[str, Any], settings: TuneSettings):
        self.base, self.space, self.start, self.settings = base, space, start, settings
        self.out = Path(settings.out)
        self.genetic = GeneticSearch(
            space, start, base.seed, settings.top_k, settings.mutation_prob, settings.mutation_sigma
        )
        self.csv = self.out / "tune.csv"
        self.png: Path | None = None
        self.best_yaml: Path | None = None
        self.finished: list[Trial] = read_csv(self.csv, space) if self.csv.exists() else []
        done = {t.index for t in self.finished}
        # trials that were running when an earlier session ended: resumed with their parameters
        self.interrupted = {
            t.index: t
            for d in sorted((self.out / "trials").glob("[0-9][0-9][0-9]*"))
            if (t := read_trial_file(d)) is not None and t.index not in done
        }
        self.t0 = time.time()
        self.bar: Any = None

    def trial_dir(self, index: int) -> Path:
        return self.out / "trials" / f"{index:03d}"

    def budget_spent(self) -> bool:
        b = self.settings.budget_min
        return b is not None and time.time() - self.t0 >= 60 * b

    def next_trial(self, pending: Sequence[Trial] = ()) -> Trial | None:
        """The lowest trial index not finished nor running: a cut trial with its parameters, or a
        new proposal; None when all `trials` are taken."""
        taken = {t.index for t in (*self.finished, *pending)}
        for index in range(self.settings.trials):
            if index not in taken:
                return self.interrupted.get(index) or self.genetic.propose(index, self.finished, pending)
        return None

    def describe(self, trial: Trial) -> str:
        changed = [f"{k} {self.start[k]}->{v}" for k, v in trial.params.items() if v != self.start[k]]
        origin = f" (from {'+'.join(map(str, trial.parents))})" if trial.parents else ""
        return f"trial {trial.index}{origin}: " + (", ".join(changed) or "the defaults")

    def finish(self, trial: Trial) -> None:
        """Record a finished trial: tune.csv, tune.png, best.yaml, a line and the bar."""
        self.finished = [t for t in self.finished if t.index != trial.index] + [trial]
        self.interrupted.pop(trial.index, None)
        self.write()
        best = best_trial(self.finished)
        line = f"trial {trial.index} {trial.status}"
        if trial.status == "failed":
            line += f": {trial.error}"
        else:
            line += f" after {trial.epochs} epochs: fitness {trial.fitness:.4f} (mAP50 {trial.map50:.4f}, mAP50-95 {trial.map:.4f}), {trial.time_s / 60:.1f} min"
        if best is not None:
            line += f"; best: trial {best.index} {best.fitness:.4f}"
        _say(line)
        if self.bar is not None:
            self.bar.update()

    def write(self) -> None:
        write_csv(self.csv, self.finished, self.space)
        best = best_trial(self.finished)
        if best is not None:
            self.best_yaml = write_best_yaml(
                self.out / "best.yaml", self.base, best, self.settings.epochs_per_trial, len(self.finished)
            )
        try:
            from yolo4.viz.plots import plot_search

            rows = [{"trial": t.index, "status": t.status, "fitness": t.fitness, **t.params} for t in self.finished]
            ranges = {p.key: (p.low, p.high, p.log) for p in self.space.params if p.kind != "choice"}
            self.png = plot_search(rows, self.space.keys, self.out / "tune.png", ranges)
        except Exception as e:  # a plot must never end the search
            _say(f"warning: could not draw tune.png: {e}")


def _say(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def failed(trial: Trial, error: BaseException) -> Trial:
    text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return replace(trial, status="failed", error=text)


# ------------------------------------------------------------------ the command
def run_tune(
    data: str | os.PathLike | None = None,
    *,
    options: Sequence[str] = (),
    config: TrainConfig | str | os.PathLike | None = None,
    settings: TuneSettings | None = None,
    **kwargs: Any,
) -> TuneResult:
    """`yolo4 tune`: run (or resume) a genetic search; see the module docstring.

    Args:
        data: the dataset (TrainConfig.data).
        options: `KEY=VALUE` TrainConfig fields of every trial (`--set`).
        config: the base TrainConfig, or a YAML of its fields (`--config`); options apply on top.
        settings: how the search runs (default TuneSettings()).
        kwargs: TuneSettings fields (trials, epochs_per_trial, budget_min, space, out, backend,
            ray_address, ...) and TrainConfig fields (model, img_size, batch, weights, ...) by
            name; None leaves a value as it is. An unknown name raises Yolo4Error.
    Returns:
        TuneResult (the best trial, every trial, the files).
    """
    settings = replace(settings) if settings is not None else TuneSettings()
    tune_keys = {f.name for f in fields(TuneSettings)}
    train_keys = {f.name for f in fields(TrainConfig)} - {"out", "epochs", "resume", "time_budget_min"}
    unknown = sorted(set(kwargs) - tune_keys - train_keys)
    if unknown:
        raise Yolo4Error(
            f"unknown tune setting {', '.join(unknown)} (search: {', '.join(sorted(tune_keys))}; "
            f"and TrainConfig fields for the trials)"
        )
    base = config if isinstance(config, TrainConfig) else TrainConfig()
    if config is not None and not isinstance(config, TrainConfig):
        base = TrainConfig.from_yaml(config)
    base = TrainConfig.from_args(list(options), base=base)
    for k, v in kwargs.items():
        if v is not None:
            if k in tune_keys:
                setattr(settings, k, os.fspath(v) if isinstance(v, os.PathLike) else v)
            else:
                setattr(base, k, os.fspath(v) if isinstance(v, os.PathLike) else v)
    if data is not None:
        base.data = os.fspath(data)
    if not base.data:
        raise Yolo4Error("give --data DATA")
    settings.check()
    base = _absolute_paths(replace(base, progress=False))  # Ray runs trials in other folders
    space = load_space(settings.space, base)
    start = start_values(space, resolved_defaults(base, settings.epochs_per_trial), yolo_defaults(base))
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out / "search.json", base, space, settings)
    search = Search(base, space, start, settings)
    backend = _backend(settings)
    n_done = len(search.finished)
    _say(
        f"tune: {base.model} on {base.data}: {settings.trials} trials of {settings.epochs_per_trial} epochs "
        f"({n_done} done before), {backend}, evolving {len(space.params)} fields: {', '.join(space.keys)}"
        + (f"; ASHA rungs at epochs {search.settings.asha.rungs}" if search.settings.asha else "")
        + (f"; budget {settings.budget_min:g} min" if settings.budget_min else "")
    )
    from tqdm import tqdm

    search.bar = tqdm(
        total=settings.trials,
        initial=min(n_done, settings.trials),
        desc="tune",
        unit="trial",
        file=sys.stderr,
        disable=None,  # a bar on a terminal, not in a log file
    )
    try:
        if backend == "ray":
            from yolo4.tuning.ray_backend import run_on_ray

            stopped = run_on_ray(search)
        else:
            stopped = run_local(search)
    finally:
        search.bar.close()
    search.write()
    return _summary(search, backend, stopped)


def run_local(search: Search) -> str | None:
    """Trials one after another in this process, pruned by ASHA's rule against the earlier ones.
    Returns why it stopped early (None: all trials ran)."""
    asha = search.settings.asha
    while (trial := search.next_trial()) is not None:
        if search.budget_spent():
            return f"time budget of {search.settings.budget_min:g} min spent"
        _say(search.describe(trial))
        try:
            done = run_trial(
                search.base,
                trial,
                search.trial_dir(trial.index),
                search.settings.epochs_per_trial,
                _asha_report(asha, list(search.finished)),
            )
        except TrialInterrupted as e:  # a signal or a hook stopped the training: resume later
            return f"{e}; run the same command again to resume"
        except Yolo4Error:
            raise
        except Exception as e:  # a diverging or crashing configuration: recorded, the search goes on
            if trial.index == 0:
                raise
            done = failed(trial, e)
        search.finish(done)
    return None


def _asha_report(asha: Asha | None, earlier: list[Trial]) -> Report:
    """A trial's report function in-process: ASHA's rule against the trials finished before it."""

    def report(epoch: int, fitness: float, history: list[dict[str, float]]) -> bool:
        return asha is not None and asha.should_stop(epoch, fitness, earlier)

    return report


def _summary(search: Search, backend: str, stopped: str | None) -> TuneResult:
    best = best_trial(search.finished)
    result = TuneResult(
        search.out, sorted(search.finished, key=lambda t: t.index), best, search.csv, search.png,
        search.best_yaml, backend, search.base, stopped,
    )  # fmt: skip
    default = next((t for t in search.finished if t.index == 0 and t.ranked), None)
    lines = [f"{len(search.finished)} trials in {search.out}" + (f" (stopped: {stopped})" if stopped else "")]
    if best is not None:
        vs = f"; the defaults (trial 0): {default.fitness:.4f}" if default is not None else ""
        lines.append(f"best: trial {best.index}, fitness {best.fitness:.4f} (mAP50 {best.map50:.4f}, "
                     f"mAP50-95 {best.map:.4f}){vs}")  # fmt: skip
        lines.append(f"train with it: yolo4 train --config {search.best_yaml} --epochs N")
        changed = set_options(best, search.start)
        lines.append("  or: yolo4 train --data ... " + " ".join(changed) if changed else "  (the defaults scored best)")
    lines.append(f"table: {search.csv}  plots: {search.png}")
    print("\n".join(lines))
    return result


# ------------------------------------------------------------------ helpers
def resolved_defaults(base: TrainConfig, epochs: int) -> TrainConfig:
    """`base` as a trial of `epochs` epochs resolves its automatic fields from the data
    (`yolo4.training.defaults.resolve_defaults`: warm-up, anchors, positives, EMA horizon), so
    that trial 0 sets exactly the values the defaults would use."""
    from yolo4.data.dataset import load_dataset
    from yolo4.training.build import select_device
    from yolo4.training.defaults import resolve_defaults

    train_set = load_dataset(base.data, "train", progress=False)
    if base.max_train_images:
        train_set = train_set.subset(list(range(min(base.max_train_images, len(train_set)))))
    return resolve_defaults(replace(base, epochs=epochs), train_set, select_device(base.device))[0]


def yolo_defaults(cfg: TrainConfig) -> dict[str, Any]:
    """The [yolo] values of cfg.model that TrainConfig's None loss fields stand for (the first
    head's; YOLO_KEYS maps the names)."""
    from yolo4.models.zoo import resolve_spec

    heads = resolve_spec(cfg.model, num_classes=None, img_size=cfg.img_size).yolo_layers
    return {k: getattr(heads[0], v) for k, v in YOLO_KEYS.items()} if heads else {}


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """data, model and weights as absolute paths when they are files or folders here."""
    out = replace(cfg)
    for key in ("data", "model", "weights"):
        v = getattr(out, key)
        if v and Path(v).exists():
            setattr(out, key, str(Path(v).resolve()))
    return out


_SAME_SEARCH_IGNORES = (*RUN_FIELDS, "progress")


def _check_resume(path: Path, base: TrainConfig, space: SearchSpace, settings: TuneSettings) -> None:
    """Write what the search is to search.json, or, when it is there, check that this is the same
    search (same trial config except how it runs, same space, same epochs per trial)."""
    base_now = {k: v for k, v in base.to_dict().items() if k not in _SAME_SEARCH_IGNORES}
    current = {"base": base_now, "space": space.to_dict(), "epochs_per_trial": settings.epochs_per_trial}
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except ValueError as e:
            raise Yolo4Error(f"{path}: not readable JSON ({e}); remove it or give another --out") from None
        before_base = before.get("base", {})
        diff = sorted(k for k in set(base_now) | set(before_base) if base_now.get(k) != before_base.get(k))
        if before.get("space") != current["space"]:
            diff.append("the search space")
        if before.get("epochs_per_trial") != settings.epochs_per_trial:
            diff.append("epochs per trial")
        if diff:
            raise Yolo4Error(
                f"{path.parent} holds another search ({', '.join(diff)} differ): give the same settings to "
                "resume it, or another --out"
            )
        return
    path.write_text(json.dumps(current, indent=1))


def _backend(settings: TuneSettings) -> str:
    if settings.backend == "local":
        return "local"
    try:
        import ray  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError:
        if settings.backend == "ray" or settings.ray_address:
            raise Yolo4Error(
                'Ray Tune is not installed: pip install "yolo4[tune]" (or run with --backend local)'
            ) from None
        return "local"
    return "ray"


def from_ray_result(trial: Trial, result: dict[str, Any] | None, error: bool, epochs: int) -> Trial:
    """A trial finished on Ray: from its last reported result (see `yolo4.tuning.ray_backend`)."""
    if error or not result or result.get("error"):
        msg = (result or {}).get("error") or "the trial raised on its Ray worker (see its error.txt in Ray's folder)"
        return replace(trial, status="failed", error=str(msg))
    curve = [float(c) for c in str(result.get("curve", "")).split()]
    n = int(result.get("epoch", len(curve)))
    return replace(
        trial,
        status="done" if n >= epochs else "pruned",
        fitness=float(result["fitness"]),
        map50=float(result["mAP50"]),
        map=float(result["mAP50-95"]),
        epochs=n,
        time_s=float(result.get("time_total_s", math.nan)),
        curve=curve,
    )
