"""The genetic search of `yolo4 tune` and its early-stopping rule, independent of how trials run.

    search = GeneticSearch(space, start, seed=0)
    trial = search.propose(index, finished)   # trial 0: the start values; then children of the best
    asha = Asha(grace=2, reduction=3, max_epochs=6)
    asha.should_stop(epoch, fitness_so_far, finished)   # ASHA's rule, for the sequential runner

The proposal follows the YOLOv4 paper and its peers (PyTorch_YOLOv4 `--evolve`, Ultralytics
`tune`): the parents are drawn from the `top_k` best finished trials with weights that grow with
their fitness, the child takes each gene from one of two parents (uniform crossover) and is
then mutated (`yolo4.tuning.space.mutate`). Each proposal's randomness comes from (seed, trial
index) only, so a resumed search proposes what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yolo4.tuning.space import SearchSpace, crossover, mutate

STATUSES = ("done", "pruned", "failed")  # a finished trial's status in tune.csv


@dataclass
class Trial:
    """One trial: a short training with `params` set, and what it scored.

    `fitness` is the best 0.1 mAP50 + 0.9 mAP50-95 over its epochs (what `best.pt` maximises), and
    `map50`/`map` are that epoch's; `curve[e]` is the best fitness up to epoch e + 1 (what ASHA
    compares). `status`: running, or one of STATUSES (pruned: stopped early by ASHA)."""

    index: int
    params: dict[str, Any]
    parents: tuple[int, ...] = ()
    status: str = "running"
    fitness: float = math.nan
    map50: float = math.nan
    map: float = math.nan
    epochs: int = 0
    time_s: float = math.nan
    curve: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def ranked(self) -> bool:
        """Whether it can be a parent (and the best): it ran all its epochs and scored."""
        return self.status == "done" and math.isfinite(self.fitness)


class GeneticSearch:
    """Proposes trials: the start values first, then mutated children of the best trials.

    Args:
        space: the evolved fields and their ranges.
        start: the start values (`yolo4.tuning.space.start_values`: the defaults at run time).
        seed: with the trial index, decides each proposal's random draws.
        top_k: parents are drawn from this many best finished trials.
        mutation_prob, mutation_sigma: see `yolo4.tuning.space.mutate`.
    """

    def __init__(
        self,
        space: SearchSpace,
        start: Mapping[str, Any],
        seed: int = 0,
        top_k: int = 5,
        mutation_prob: float = 0.5,
        mutation_sigma: float = 0.15,
    ):
        self.space, self.start, self.seed = space, dict(start), seed
        self.top_k, self.prob, self.sigma = top_k, mutation_prob, mutation_sigma

    def propose(self, index: int, finished: Sequence[Trial], pending: Sequence[Trial] = ()) -> Trial:
        """Trial `index`'s parameters, given the finished trials and those still running
        (never a copy of either). The first proposal is the start values themselves."""
        known = [t.params for t in (*finished, *pending)]
        if self.start not in known:  # the defaults come first, as the reference to beat
            return Trial(index, dict(self.start))
        rng = np.random.default_rng([self.seed, index])
        parents = self.select(finished, rng)
        if not parents:  # nothing scored yet (the first trials are running or failed): mutate the start
            return Trial(index, mutate(self.start, self.space, rng, self.prob, self.sigma, known))
        a, b = parents
        child = crossover(a.params, b.params, rng) if a is not b else dict(a.params)
        child = mutate(child, self.space, rng, self.prob, self.sigma, known)
        return Trial(index, child, tuple(sorted({a.index, b.index})))

    def select(self, finished: Sequence[Trial], rng: np.random.Generator) -> tuple[Trial, Trial] | None:
        """Two parents (possibly the same trial) from the `top_k` best ranked trials, each drawn
        with probability proportional to its fitness minus the worst of them (plus a little, so
        that the worst of the k has a chance); None when no trial is ranked."""
        ranked = sorted((t for t in finished if t.ranked), key=lambda t: t.fitness, reverse=True)[: self.top_k]
        if not ranked:
            return None
        fit = np.array([t.fitness for t in ranked])
        w = fit - fit.min() + max(1e-3, 0.1 * (fit.max() - fit.min()))
        i, j = rng.choice(len(ranked), size=2, p=w / w.sum())
        return ranked[int(i)], ranked[int(j)]


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The ranked trial of highest fitness (the earliest of equals); None when none is ranked."""
    ranked = [t for t in trials if t.ranked]
    return max(ranked, key=lambda t: (t.fitness, -t.index)) if ranked else None


@dataclass(frozen=True)
class Asha:
    """Asynchronous successive halving (Li et al. 2020, Ray Tune's ASHAScheduler): at each rung
    epoch grace * reduction^k (below max_epochs), a trial stops when its fitness so far is below
    the (1 - 1/reduction) quantile of the fitness the earlier trials had at that epoch."""

    grace: int
    reduction: float
    max_epochs: int

    @property
    def rungs(self) -> list[int]:
        out, r = [], float(self.grace)
        while round(r) < self.max_epochs:
            out.append(round(r))
            r *= self.reduction
        return out

    def should_stop(self, epoch: int, fitness: float, earlier: Sequence[Trial]) -> bool:
        """Whether a trial whose best fitness after `epoch` epochs is `fitness` stops there."""
        if epoch not in self.rungs:
            return False
        recorded = [t.curve[epoch - 1] for t in earlier if len(t.curve) >= epoch and math.isfinite(t.curve[epoch - 1])]
        if not recorded:
            return False
        return fitness < float(np.percentile(recorded, (1 - 1 / self.reduction) * 100))
