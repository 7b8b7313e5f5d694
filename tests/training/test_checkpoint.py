"""Checkpoints: atomic writes, weights_only loads, damaged files detected, the previous good one used."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from yolo4.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _state(epoch: int) -> dict:
    return {
        "model": {"w": torch.full((3,), float(epoch))},
        "epoch": epoch,
        "step": 10 * epoch,
        "config": {"lr": 0.01, "steps": [0.8, 0.9], "weights": None},
        "rng": rng_state(),
    }


def test_save_load_roundtrip_weights_only(tmp_path):
    p = save_checkpoint(_state(1), tmp_path / "last.pt")
    state = torch.load(p, weights_only=True)  # only tensors and primitives inside
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert load_checkpoint(p)["config"]["steps"] == [0.8, 0.9]


def test_atomic_write_leaves_no_temp_and_keeps_previous(tmp_path):
    save_checkpoint(_state(1), tmp_path / "last.pt")
    save_checkpoint(_state(2), tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.prev.pt")["epoch"] == 1


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    save_checkpoint(_state(1), tmp_path / "last.pt")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(CheckpointError, match="disk full.*the previous last.pt is kept"):
        save_checkpoint(_state(2), tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_truncated_checkpoint_detected_and_previous_used(tmp_path, caplog):
    save_checkpoint(_state(1), tmp_path / "last.pt")
    save_checkpoint(_state(2), tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "last.pt")
    state, path = load_latest(tmp_path)
    assert path.name == "last.prev.pt" and state["epoch"] == 1
    assert "trying the previous checkpoint" in caplog.text


def test_no_usable_checkpoint_raises(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_latest(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a yolo4 training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_roundtrip_through_file(tmp_path):
    save_checkpoint({"rng": rng_state(), "model": {}, "epoch": 0, "step": 0, "config": {}}, tmp_path / "r.pt")
    a = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert a == b
