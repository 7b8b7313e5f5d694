"""The search's files: `tune.csv` (every finished trial; also what a resumed search reads back),
`tune.png` (fitness per trial, and each parameter against fitness) and `best.yaml` (the best
trial's configuration, for `yolo4 train --config best.yaml`).

tune.csv columns: trial, status (done | pruned | failed), fitness (best 0.1 mAP50 + 0.9 mAP50-95),
mAP50 and mAP50-95 of that epoch, epochs run, time_s, parents (e.g. "0+3"), one column per
evolved field, curve (the best fitness after each epoch, space-separated), error.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.tuning.search import STATUSES, Trial
from yolo4.tuning.space import SearchSpace

HEAD = ["trial", "status", "fitness", "mAP50", "mAP50-95", "epochs", "time_s", "parents"]
TAIL = ["curve", "error"]

# TrainConfig fields that say how a run is run, not what it learns: best.yaml leaves them out
RUN_FIELDS = ("epochs", "out", "resume", "time_budget_min", "progress", "device", "workers", "threads", "export")


def _num(v: float, digits: int = 5) -> str:
    return "" if not math.isfinite(v) else f"{v:.{digits}f}"


def write_csv(path: str | os.PathLike, trials: Sequence[Trial], space: SearchSpace) -> Path:
    """tune.csv (atomically: a reader or a kill never sees half a file), trials in index order."""
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*HEAD, *space.keys, *TAIL])
        for t in sorted(trials, key=lambda t: t.index):
            w.writerow(
                [
                    t.index,
                    t.status,
                    _num(t.fitness),
                    _num(t.map50),
                    _num(t.map),
                    t.epochs,
                    _num(t.time_s, 1),
                    "+".join(map(str, t.parents)),
                    *(_text(t.params[k]) for k in space.keys),
                    " ".join(f"{c:.5f}" for c in t.curve),
                    t.error,
                ]
            )
    os.replace(tmp, path)
    return path


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def read_csv(path: str | os.PathLike, space: SearchSpace) -> list[Trial]:
    """The finished trials of a tune.csv written for `space`. Raises Yolo4Error naming the file
    when its columns are not this space's or a row does not parse."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    expected = [*HEAD, *space.keys, *TAIL]
    if rows[0] != expected:
        raise Yolo4Error(
            f"{path}: written for another search space (columns {', '.join(rows[0])}; this search has "
            f"{', '.join(expected)}): give the same --space, or another --out"
        )
    trials = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            d = dict(zip(expected, row, strict=True))
            if d["status"] not in STATUSES:
                raise ValueError(f"status {d['status']!r}")
            params = {k: TrainConfig.parse_value(k, d[k]) for k in space.keys}
            trials.append(
                Trial(
                    index=int(d["trial"]),
                    params=params,
                    parents=tuple(int(p) for p in d["parents"].split("+") if p),
                    status=d["status"],
                    fitness=_float(d["fitness"]),
                    map50=_float(d["mAP50"]),
                    map=_float(d["mAP50-95"]),
                    epochs=int(d["epochs"]),
                    time_s=_float(d["time_s"]),
                    curve=[float(c) for c in d["curve"].split()],
                    error=d["error"],
                )
            )
        except (ValueError, Yolo4Error) as e:
            raise Yolo4Error(f"{path}:{line}: not a trial row ({e})") from None
    return trials


def _float(text: str) -> float:
    return float(text) if text else math.nan


def best_config_entries(base: TrainConfig, best: Trial) -> dict[str, Any]:
    """What best.yaml holds: data and model, every field the search's base config sets away from
    the defaults (except how to run: RUN_FIELDS), and the best trial's parameters."""
    default = TrainConfig()
    out: dict[str, Any] = {"data": base.data, "model": base.model}
    for f in fields(TrainConfig):
        v = getattr(base, f.name)
        if f.name not in out and f.name not in RUN_FIELDS and v != getattr(default, f.name):
            out[f.name] = list(v) if isinstance(v, tuple) else v
    out.update(best.params)
    return out


def write_best_yaml(path: str | os.PathLike, base: TrainConfig, best: Trial, epochs_per_trial: int, n: int) -> Path:
    """best.yaml: `best_config_entries`, with a header saying where it comes from and how to use it."""
    path = Path(path)
    header = (
        f"# yolo4 tune: the best of {n} trials of {epochs_per_trial} epochs: trial {best.index}, fitness "
        f"{best.fitness:.4f} (mAP50 {best.map50:.4f}, mAP50-95 {best.map:.4f}; fitness = 0.1 mAP50 + 0.9 mAP50-95)\n"
        f"# train with it: yolo4 train --config {path.name} --epochs N   (options given there override it)\n"
    )
    body = yaml.safe_dump(best_config_entries(base, best), sort_keys=False, default_flow_style=False)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(header + body)
    os.replace(tmp, path)
    return path


def set_options(best: Trial, start: dict[str, Any]) -> list[str]:
    """The best parameters that differ from the `start` values, as `--set KEY=VALUE` options."""
    return [f"--set {k}={_text(v)}" for k, v in best.params.items() if v != start.get(k)]
