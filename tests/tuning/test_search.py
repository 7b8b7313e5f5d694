"""The genetic proposal (defaults first, children of the best, never a repeat, reproducible
from seed and index) and ASHA's stopping rule against a brute-force reference."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from yolo4.tuning.search import Asha, GeneticSearch, Trial, best_trial
from yolo4.tuning.space import parse_space

SPACE = parse_space({"lr": {"low": 1e-3, "high": 0.1, "log": True}, "momentum": [0.6, 0.98], "mosaic": [0.0, 1.0]})
START = {"lr": 0.01, "momentum": 0.937, "mosaic": 1.0}


def _done(index, fitness, params=None, status="done", curve=()):
    params = params or {"lr": 0.01 + index * 1e-4, "momentum": 0.9, "mosaic": 0.5}
    return Trial(index, params, status=status, fitness=fitness, curve=list(curve), epochs=3)


def test_first_trial_is_the_start_and_then_children():
    search = GeneticSearch(SPACE, START, seed=3)
    t0 = search.propose(0, [])
    assert t0.params == START and t0.parents == ()
    finished = [_done(0, 0.2, START)]
    t1 = search.propose(1, finished)
    assert t1.params != START and t1.parents == (0,)
    assert all(SPACE[k].contains(v) for k, v in t1.params.items())
    # the same proposal again from the same record (what a resumed search relies on)
    assert GeneticSearch(SPACE, START, seed=3).propose(1, finished) == t1
    assert GeneticSearch(SPACE, START, seed=4).propose(1, finished).params != t1.params


def test_start_comes_first_even_when_not_index_zero_and_pending_are_not_repeated():
    search = GeneticSearch(SPACE, START)
    assert search.propose(5, [_done(1, 0.3)]).params == START  # the defaults were never run
    pending = [Trial(0, dict(START))]
    t1 = search.propose(1, [], pending)  # trial 0 still running: a mutation of the start
    assert t1.params != START and t1.parents == ()


def test_children_never_repeat_a_known_trial():
    space = parse_space({"burn_in": [0, 2]})  # three values only
    search = GeneticSearch(space, {"burn_in": 1}, mutation_prob=1.0, mutation_sigma=0.5)
    finished = [_done(0, 0.1, {"burn_in": 1}), _done(1, 0.2, {"burn_in": 0})]
    assert search.propose(2, finished).params == {"burn_in": 2}


def test_parents_are_the_top_k_weighted_by_fitness():
    search = GeneticSearch(SPACE, START, top_k=3)
    finished = [_done(i, f) for i, f in enumerate([0.10, 0.50, 0.40, 0.30, 0.05])]
    finished.append(_done(9, 0.99, status="pruned"))  # pruned and failed trials are never parents
    finished.append(_done(8, math.nan, status="failed"))
    rng = np.random.default_rng(0)
    drawn = Counter(t.index for _ in range(3000) for t in search.select(finished, rng))
    assert set(drawn) == {1, 2, 3}  # the three best ranked
    assert drawn[1] > drawn[2] > drawn[3] > 0
    assert search.select([_done(0, 0.1, status="pruned")], rng) is None


def test_best_trial_is_the_best_ranked():
    trials = [_done(0, 0.2), _done(1, 0.5, status="pruned"), _done(2, 0.4), _done(3, 0.4)]
    assert best_trial(trials).index == 2
    assert best_trial([_done(0, math.nan, status="failed")]) is None


@pytest.mark.parametrize(
    ("grace", "rf", "max_epochs", "rungs"),
    [(1, 3, 9, [1, 3]), (1, 3, 10, [1, 3, 9]), (2, 3, 6, [2]), (1, 2, 8, [1, 2, 4]), (3, 3, 3, [])],
)
def test_asha_rungs(grace, rf, max_epochs, rungs):
    assert Asha(grace, rf, max_epochs).rungs == rungs


def test_asha_stops_below_the_quantile_of_earlier_trials():
    asha = Asha(1, 3, 9)
    rng = np.random.default_rng(0)
    earlier = [_done(i, 0, curve=rng.random(9)) for i in range(10)]
    earlier.append(_done(10, 0, curve=[0.5]))  # pruned after one epoch: counts at rung 1 only
    for epoch in range(1, 10):
        recorded = sorted(t.curve[epoch - 1] for t in earlier if len(t.curve) >= epoch)
        # brute force: the (1 - 1/3) quantile by linear interpolation between order statistics
        pos = (len(recorded) - 1) * (2 / 3)
        lo = int(pos)
        cutoff = recorded[lo] + (pos - lo) * (recorded[min(lo + 1, len(recorded) - 1)] - recorded[lo])
        for value in (cutoff - 1e-6, cutoff + 1e-6):
            assert asha.should_stop(epoch, value, earlier) == (epoch in (1, 3) and value < cutoff)
    assert not asha.should_stop(1, 0.0, [])  # the first trial is never stopped


def test_ray_asha_never_stops_the_defaults():
    """On Ray, ASHA may stop any trial at a rung but trial 0, whose fitness still counts there."""
    pytest.importorskip("ray.tune", reason="Ray Tune not installed (pip install 'yolo4[tune]')")
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from yolo4.tuning.ray_backend import ReferenceASHA

    asha = ReferenceASHA(time_attr="epoch", metric="fitness", mode="max", max_t=8, grace_period=4, reduction_factor=3)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={"index": i}) for i in (1, 0, 2)]
    for t in trials:
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, trials[0], {"epoch": 4, "fitness": 0.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, trials[1], {"epoch": 4, "fitness": 0.1}) == TrialScheduler.CONTINUE  # trial 0
    assert asha.on_trial_result(None, trials[2], {"epoch": 4, "fitness": 0.2}) == TrialScheduler.STOP
    plain = ASHAScheduler(time_attr="epoch", metric="fitness", mode="max", max_t=8, grace_period=4, reduction_factor=3)
    for t in trials[:2]:
        plain.on_trial_add(None, t)
    plain.on_trial_result(None, trials[0], {"epoch": 4, "fitness": 0.5})
    assert plain.on_trial_result(None, trials[1], {"epoch": 4, "fitness": 0.1}) == TrialScheduler.STOP  # what it undoes
