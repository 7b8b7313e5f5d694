"""The search space of `yolo4 tune`: which `TrainConfig` fields evolve, within which ranges, and
the two genetic operators on them (crossover of two parents, mutation of a child).

A space is a YAML mapping from TrainConfig field to its range (`--space space.yaml`):

    lr: {low: 0.001, high: 0.1, log: true}    # mutated on a log scale
    momentum: [0.6, 0.98]                     # shorthand for {low: 0.6, high: 0.98}
    warmup_epochs: [0, 5]
    iou_loss: {choices: [ciou, diou, giou]}   # one of these
    neighbor_cells: {choices: [true, false]}

The field's type decides the value's: an `int` field mutates to ints, a `float` one to floats,
and `choices` are parsed as the field's type. Unknown fields, ranges that are empty, and choices
that do not parse raise Yolo4Error naming the file.

Mutation (`mutate`) works in each range's unit interval (linear or log): every gene moves with
probability `prob` by a normal step of `sigma` (a fraction of the range), reflected at the ends,
so values never leave their range and a value at 0 can still move (unlike the multiplicative
gains of YOLOv5's `--evolve`); a choice gene jumps to another choice with probability `prob`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig

# The default space: the fields the YOLOv4 paper's genetic search and its peers evolve (optimiser,
# warm-up, loss weights and assignment thresholds, augmentation strengths, mosaic/mixup), with
# ranges wide enough for small and large data. `warmup_epochs` stands for the warm-up when the
# config has it and `burn_in` is left to it; otherwise `burn_in` (steps) evolves in [0, 2 x its value].
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-3, "high": 0.1, "log": True},
    "momentum": {"low": 0.6, "high": 0.98},
    "weight_decay": {"low": 0.0, "high": 1e-3},
    "warmup_epochs": {"low": 0.0, "high": 5.0},
    "iou_normalizer": {"low": 0.02, "high": 1.0, "log": True},
    "cls_normalizer": {"low": 0.2, "high": 4.0, "log": True},
    "obj_normalizer": {"low": 0.2, "high": 4.0, "log": True},
    "iou_thresh": {"low": 0.1, "high": 1.0},
    "ignore_thresh": {"low": 0.3, "high": 0.9},
    "mosaic": {"low": 0.0, "high": 1.0},
    "mixup": {"low": 0.0, "high": 0.5},
    "jitter": {"low": 0.0, "high": 0.5},
    "scale_min": {"low": 0.25, "high": 1.0},
    "scale_max": {"low": 1.0, "high": 2.0},
    "hue": {"low": 0.0, "high": 0.1},
    "saturation": {"low": 1.0, "high": 2.5},
    "exposure": {"low": 1.0, "high": 2.5},
    "flip": {"low": 0.0, "high": 0.5},
}

# TrainConfig fields whose None means "the cfg's [yolo] value", and that value's key there
YOLO_KEYS = {
    "iou_loss": "iou_loss",
    "iou_thresh": "iou_thresh",
    "ignore_thresh": "ignore_thresh",
    "label_smoothing": "label_smooth_eps",
    "iou_normalizer": "iou_normalizer",
    "cls_normalizer": "cls_normalizer",
    "obj_normalizer": "obj_normalizer",
    "scale_x_y": "scale_x_y",
}


@dataclass(frozen=True)
class Param:
    """One evolved TrainConfig field: a range [low, high] of `kind` "int" or "float" (on a log
    scale when `log`), or a list of `choices` (kind "choice")."""

    key: str
    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        """Whether `value` is a value of this parameter (right type, inside the range)."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        return self.low <= value <= self.high

    def to_unit(self, value: float) -> float:
        """A value of the range -> [0, 1] (log scale when `log`)."""
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float | int:
        """[0, 1] -> a value of the range: an int for int fields, else a float rounded to 4
        significant digits (the tables stay readable), clamped into [low, high]."""
        u = min(max(u, 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        if self.kind == "int":
            return int(min(max(round(v), math.ceil(self.low)), math.floor(self.high)))
        return min(max(float(f"{v:.4g}"), self.low), self.high)

    def mutate(self, value: Any, rng: np.random.Generator, sigma: float) -> Any:
        """A new value near `value`: a normal step of `sigma` in the unit interval, reflected at
        its ends; a choice jumps to one of the others."""
        if self.kind == "choice":
            others = [c for c in self.choices if c != value]
            return others[int(rng.integers(len(others)))] if others else value
        u = self.to_unit(value) + float(rng.normal(0.0, sigma))
        u = abs(u) % 2.0  # reflect at 0 and 1: ... -0.2 -> 0.2, 1.3 -> 0.7
        return self.from_unit(2.0 - u if u > 1.0 else u)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {{{', '.join(map(str, self.choices))}}}"
        return f"{self.key} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class SearchSpace:
    """The evolved fields, in order (the column order of tune.csv)."""

    params: tuple[Param, ...]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def __getitem__(self, key: str) -> Param:
        for p in self.params:
            if p.key == key:
                return p
        raise KeyError(key)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The space as `parse_space` reads it (for the search's record)."""
        return {
            p.key: {"choices": list(p.choices)}
            if p.kind == "choice"
            else {"low": p.low, "high": p.high, **({"log": True} if p.log else {})}
            for p in self.params
        }


def parse_space(entries: Mapping[str, Any], source: str = "search space") -> SearchSpace:
    """A space from its mapping (see the module docstring); errors name `source`."""
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    params = []
    for key, spec in entries.items():
        where = f"{source}: {key}"
        if key not in types:
            raise Yolo4Error(f"{where}: not a TrainConfig field (fields: {', '.join(types)})")
        if isinstance(spec, (list, tuple)):
            spec = {"low": spec[0], "high": spec[1]} if len(spec) == 2 else {"bad": spec}
        if not isinstance(spec, Mapping) or not ({"low", "high"} <= set(spec) or "choices" in spec):
            raise Yolo4Error(f"{where}: expected [LOW, HIGH], {{low: L, high: H, log: true}} or {{choices: [...]}}")
        unknown = set(spec) - {"low", "high", "log", "choices"}
        if unknown:
            raise Yolo4Error(f"{where}: unknown entry {', '.join(sorted(unknown))} (low, high, log, choices)")
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, (list, tuple)) or len(choices) < 2:
                raise Yolo4Error(f"{where}: choices must be a list of at least two values")
            parsed = tuple(TrainConfig.parse_value(key, c) for c in choices)
            params.append(Param(key, "choice", choices=parsed))
            continue
        t = types[key]
        kind = "int" if t.startswith("int") else "float" if t.startswith("float") else None
        if kind is None:
            raise Yolo4Error(f"{where}: a {t} field takes choices ({{choices: [...]}}), not a range")
        try:
            low, high, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log", False))
        except (TypeError, ValueError):
            raise Yolo4Error(f"{where}: low and high must be numbers, got {spec['low']!r}, {spec['high']!r}") from None
        if not low < high:
            raise Yolo4Error(f"{where}: empty range: low {low:g} must be below high {high:g}")
        if log and low <= 0:
            raise Yolo4Error(f"{where}: a log range needs low > 0, got {low:g}")
        if kind == "int" and math.floor(high) < math.ceil(low):
            raise Yolo4Error(f"{where}: no integer in [{low:g}, {high:g}]")
        params.append(Param(key, kind, low, high, log))
    if not params:
        raise Yolo4Error(f"{source}: no fields to evolve")
    return SearchSpace(tuple(params))


def load_space(path: str | os.PathLike | None, base: TrainConfig) -> SearchSpace:
    """The space in YAML file `path`, or the default space for `base` (DEFAULT_SPACE with the
    warm-up field that `base` uses; fields this TrainConfig lacks are left out)."""
    if path is None:
        return parse_space(default_space_entries(base), "the default search space")
    try:
        entries = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise Yolo4Error(f"{path}: cannot read the search space ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise Yolo4Error(f"{path}: not valid YAML ({e})") from None
    if not isinstance(entries, dict):
        raise Yolo4Error(f"{path}: expected a mapping of TrainConfig fields to ranges")
    return parse_space(entries, str(path))


def default_space_entries(base: TrainConfig) -> dict[str, Any]:
    known = {f.name for f in fields(TrainConfig)}
    entries = {k: v for k, v in DEFAULT_SPACE.items() if k in known}
    burn_in = getattr(base, "burn_in", None)
    if "warmup_epochs" in entries and burn_in is not None:
        del entries["warmup_epochs"]  # an explicit burn_in overrides warmup_epochs
    if "warmup_epochs" not in entries and burn_in:
        entries["burn_in"] = {"low": 0, "high": 2 * int(burn_in)}
    return entries


def start_values(space: SearchSpace, base: TrainConfig, yolo_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Where the search starts: each field's value in `base` (the defaults at run time with the
    user's --set, automatic fields resolved: `yolo4.tuning.run.resolved_defaults`), or for the None
    fields that mean "the cfg's [yolo] value", `yolo_defaults` (see `YOLO_KEYS`). Raises
    Yolo4Error for a start value outside its range, or none at all."""
    values = {}
    for p in space.params:
        v = getattr(base, p.key)
        if v is None:
            v = yolo_defaults.get(p.key)
        if v is None:
            raise Yolo4Error(
                f"search space: {p.key} has no value to start from (it is None in the config and not a [yolo] key "
                f"of the model): give one with --set {p.key}=VALUE"
            )
        if p.kind == "int" and isinstance(v, float) and v.is_integer():
            v = int(v)
        if p.kind == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not p.contains(v):
            raise Yolo4Error(f"search space: the start value {p.key}={v} is outside {p.describe()}: widen the range")
        values[p.key] = v
    return values


def crossover(a: Mapping[str, Any], b: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Uniform crossover: each gene from parent `a` or `b` with equal chance."""
    return {k: (a[k] if rng.random() < 0.5 else b[k]) for k in a}


def mutate(
    values: Mapping[str, Any],
    space: SearchSpace,
    rng: np.random.Generator,
    prob: float = 0.5,
    sigma: float = 0.15,
    avoid: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A mutated copy of `values`: each gene moves with probability `prob` (see `Param.mutate`),
    again until the result differs from `values` and from every mapping in `avoid` (the trials
    already run), or 100 tries have been made. `values` is not modified."""
    out = dict(values)
    for _ in range(100):
        out = {
            p.key: (p.mutate(values[p.key], rng, sigma) if rng.random() < prob else values[p.key]) for p in space.params
        }
        if out != dict(values) and all(out != dict(a) for a in avoid):
            break
    return out
