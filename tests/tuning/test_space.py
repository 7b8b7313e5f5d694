"""The search space: parsing and its errors, start values, and the genetic operators (mutation
keeps every value inside its range and type; crossover takes each gene from a parent)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.tuning.space import (
    DEFAULT_SPACE,
    Param,
    crossover,
    default_space_entries,
    load_space,
    mutate,
    parse_space,
    start_values,
)


def _check_value(p: Param, v) -> None:
    if p.kind == "choice":
        assert v in p.choices
        return
    assert type(v) is (int if p.kind == "int" else float), (p, v)
    assert p.low <= v <= p.high, (p, v)


@st.composite
def params_and_values(draw):
    kind = draw(st.sampled_from(["float", "int", "choice"]))
    if kind == "choice":
        p = Param("iou_loss", "choice", choices=("ciou", "diou", "giou", "mse"))
        return p, draw(st.sampled_from(p.choices))
    log = draw(st.booleans())
    low = draw(st.floats(1e-4 if log else -10.0, 10.0))
    high = low + draw(st.floats(1e-3 if kind == "float" else 1.0, 100.0))
    p = Param("burn_in" if kind == "int" else "lr", kind, low, high, log)
    u = draw(st.floats(0.0, 1.0))
    return p, p.from_unit(u)


@settings(max_examples=150, deadline=None)
@given(params_and_values(), st.integers(0, 2**32 - 1), st.floats(0.01, 3.0))
def test_mutation_keeps_range_and_type(pv, seed, sigma):
    p, v = pv
    _check_value(p, v)  # from_unit itself lands inside
    rng = np.random.default_rng(seed)
    for _ in range(20):
        v = p.mutate(v, rng, sigma)
        _check_value(p, v)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 1.0), st.floats(0.01, 1.0))
def test_mutate_the_default_space(seed, prob, sigma):
    space = parse_space(default_space_entries(TrainConfig()))
    rng = np.random.default_rng(seed)
    start = {p.key: p.from_unit(0.5) for p in space.params}
    frozen = dict(start)
    child = mutate(start, space, rng, prob, sigma, avoid=[start])
    assert start == frozen  # the input is not modified
    assert child != start and set(child) == set(start)
    for p in space.params:
        _check_value(p, child[p.key])


def test_mutation_moves_values_at_the_ends_of_the_range():
    """A value at 0 (mixup off) can mutate, unlike under multiplicative gains; reflection keeps it
    inside and the steps are about sigma of the range."""
    p = Param("mixup", "float", 0.0, 0.5)
    rng = np.random.default_rng(0)
    moved = [p.mutate(0.0, rng, 0.1) for _ in range(2000)]
    assert min(moved) >= 0.0 and max(moved) <= 0.5
    assert np.mean(moved) == pytest.approx(0.5 * 0.1 * math.sqrt(2 / math.pi), rel=0.1)  # |N(0, 0.1)| x range
    top = [p.mutate(0.5, rng, 0.1) for _ in range(200)]
    assert max(top) <= 0.5 and min(top) < 0.45


def test_log_scale_mutates_in_ratios():
    p = Param("lr", "float", 1e-3, 0.1, log=True)
    assert p.to_unit(0.01) == pytest.approx(0.5) and p.from_unit(0.5) == pytest.approx(0.01)
    rng = np.random.default_rng(1)
    steps = np.log10([p.mutate(0.01, rng, 0.1) for _ in range(2000)]) + 2  # decades moved
    assert np.std(steps) == pytest.approx(0.2, rel=0.1)  # sigma 0.1 of a 2-decade range


def test_int_param_rounds_and_choice_jumps():
    p = Param("burn_in", "int", 0, 3)
    assert {p.from_unit(u) for u in np.linspace(0, 1, 101)} == {0, 1, 2, 3}
    c = Param("iou_loss", "choice", choices=("ciou", "diou"))
    assert c.mutate("ciou", np.random.default_rng(0), 0.1) == "diou"


def test_crossover_takes_each_gene_from_a_parent():
    a = {f"k{i}": i for i in range(50)}
    b = {f"k{i}": -i - 1 for i in range(50)}
    child = crossover(a, b, np.random.default_rng(0))
    assert all(child[k] in (a[k], b[k]) for k in a)
    assert 10 < sum(child[k] == a[k] for k in a) < 40


def test_parse_space_types_from_trainconfig(tmp_path):
    space = parse_space(
        {
            "lr": {"low": 0.001, "high": 0.1, "log": True},
            "warmup_epochs" if hasattr(TrainConfig(), "warmup_epochs") else "sgdr_mult": [0, 5],
            "precise_bn_batches": [0, 16],
            "neighbor_cells": {"choices": ["true", "false"]},
            "iou_loss": {"choices": ["ciou", "giou"]},
        }
    )
    assert [p.kind for p in space.params] == ["float", "float", "int", "choice", "choice"]
    assert space["neighbor_cells"].choices == (True, False)
    path = tmp_path / "space.yaml"
    path.write_text("momentum: [0.8, 0.95]\nmosaic: {low: 0, high: 1}\n")
    assert load_space(path, TrainConfig()).keys == ["momentum", "mosaic"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"learning_rate": [0.1, 1]}, "not a TrainConfig field"),
        ({"lr": [0.1, 0.1]}, "empty range"),
        ({"lr": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
        ({"lr": {"low": "a", "high": 1}}, "must be numbers"),
        ({"lr": {"low": 0.1, "high": 1, "step": 2}}, "unknown entry step"),
        ({"lr": [0.1]}, "expected \\[LOW, HIGH\\]"),
        ({"iou_loss": [0, 1]}, "takes choices"),
        ({"ema": {"choices": ["maybe", "true"]}}, "not a valid bool"),
        ({"ema": {"choices": [True]}}, "at least two"),
        ({"burn_in": [0.2, 0.8]}, "no integer"),
        ({}, "no fields"),
    ],
)
def test_parse_space_errors(entries, message):
    with pytest.raises(Yolo4Error, match=message):
        parse_space(entries, "space.yaml")


def test_load_space_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(Yolo4Error, match="bad.yaml: not valid YAML"):
        load_space(bad, TrainConfig())
    bad.write_text("- lr\n")
    with pytest.raises(Yolo4Error, match="bad.yaml: expected a mapping"):
        load_space(bad, TrainConfig())
    with pytest.raises(Yolo4Error, match="missing.yaml: cannot read"):
        load_space(tmp_path / "missing.yaml", TrainConfig())


def test_default_space_follows_the_warm_up_field():
    entries = default_space_entries(TrainConfig(burn_in=100))
    assert "warmup_epochs" not in entries and entries["burn_in"] == {"low": 0, "high": 200}
    if hasattr(TrainConfig(), "warmup_epochs"):
        assert "warmup_epochs" in default_space_entries(TrainConfig(burn_in=None))
    assert set(entries) - {"burn_in"} <= set(DEFAULT_SPACE)


def test_start_values_are_the_config_or_the_models_yolo_keys():
    space = parse_space({"lr": [0.001, 0.1], "iou_normalizer": [0.01, 1.0], "burn_in": [0, 50]})
    start = start_values(space, TrainConfig(lr=0.02, burn_in=10), {"iou_normalizer": 0.07})
    assert start == {"lr": 0.02, "iou_normalizer": 0.07, "burn_in": 10}
    assert type(start_values(space, TrainConfig(lr=0.02, burn_in=10), {"iou_normalizer": 1})["iou_normalizer"]) is float
    with pytest.raises(Yolo4Error, match="iou_normalizer has no value to start from"):
        start_values(space, TrainConfig(lr=0.02, burn_in=10), {})
    with pytest.raises(Yolo4Error, match=r"lr=0.5 is outside lr in \[0.001, 0.1\]"):
        start_values(space, TrainConfig(lr=0.5, burn_in=10), {"iou_normalizer": 0.07})
