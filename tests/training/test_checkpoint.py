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


# ---------------------------------------------------------------- hostile, foreign and future checkpoints
class _Payload:
    """Unpickling this runs `touch <path>`: what a hostile .pt file would do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({**_state(1), "extra": _Payload(marker)}, tmp_path / "last.pt")  # torch.save pickles the object
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()


def test_a_checkpoint_from_a_newer_yolo4_is_named(tmp_path):
    from yolo4.training.checkpoint import CHECKPOINT_FORMAT

    p = save_checkpoint(_state(1), tmp_path / "last.pt")
    assert load_checkpoint(p)["format"] == CHECKPOINT_FORMAT
    state = torch.load(p, weights_only=True)
    torch.save({**state, "format": CHECKPOINT_FORMAT + 1, "yolo4_version": "9.0"}, p)
    with pytest.raises(CheckpointError, match=r"written by a newer yolo4 \(9.0, checkpoint format 2"):
        load_checkpoint(p)


def test_weights_of_another_network_are_named_and_change_nothing(tmp_path):
    from torch import nn

    from yolo4.training.checkpoint import load_model_state

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    other = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"x.pt: the weights are for another network: 0.weight is \(16, 3, 3, 3\)"
    ):
        load_model_state(net, other.state_dict(), "x.pt")
    with pytest.raises(CheckpointError, match="2.weight not in this network"):
        load_model_state(net, {**net.state_dict(), "2.weight": torch.zeros(1)}, "x.pt")
    with pytest.raises(CheckpointError, match="1.running_var missing"):
        load_model_state(net, {k: v for k, v in net.state_dict().items() if k != "1.running_var"}, "x.pt")
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    load_model_state(net, {k: v + 1 for k, v in before.items()}, "x.pt")
    assert torch.equal(net[0].weight, before["0.weight"] + 1)


def test_a_folder_or_a_plain_state_dict_is_not_a_checkpoint(tmp_path):
    (tmp_path / "last.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path / "last.pt")
    torch.save({"model": torch.zeros(3), "epoch": 1, "step": 1, "config": {}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="'model' entry is not a state dict"):
        load_checkpoint(tmp_path / "odd.pt")


_FULL_DISK_CHILD = """
import resource, signal, sys, torch
from yolo4.training.checkpoint import save_checkpoint
from yolo4.errors import Yolo4Error
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # no file may grow past 200 kB
state = {"model": {"w": torch.zeros(100_000)}, "epoch": 2, "step": 20, "config": {}}
try:
    save_checkpoint(state, sys.argv[1])
except Yolo4Error as e:
    print(e)
    sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_a_write_the_disk_refuses_keeps_the_previous_checkpoint(tmp_path):
    """A real failed write (the OS refuses bytes past a file-size limit, as a full disk does):
    the previous checkpoint is kept, no temp file is left, and the error says so."""
    import subprocess
    import sys

    save_checkpoint(_state(1), tmp_path / "last.pt")
    r = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(tmp_path / "last.pt")], capture_output=True, text=True
    )
    assert r.returncode == 3, r.stderr[-2000:]
    assert "cannot write the checkpoint (file too large); the previous last.pt is kept as it was" in r.stdout
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# ---------------------------------------------------------------- one training per run folder
_HOLDER = """
import sys, time
from yolo4.training.checkpoint import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_run_folder_is_locked_while_a_training_holds_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from yolo4.training.checkpoint import RunLock

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=rf"run is in use by another training \(pid {holder.pid} on "):
            RunLock(tmp_path / "run").acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder leaves no stale lock
        holder.wait()
    with RunLock(tmp_path / "run"), pytest.raises(CheckpointError, match="in use"):
        RunLock(tmp_path / "run").acquire()  # (a second lock in one process is refused too)
    RunLock(tmp_path / "run").acquire().release()


def test_trained_network_is_the_checkpoints_network_with_its_ema_weights(tmp_path):
    from yolo4.darknet import Darknet
    from yolo4.darknet.cfg import format_cfg
    from yolo4.models.zoo import build
    from yolo4.training.checkpoint import trained_network

    torch.manual_seed(0)
    net = Darknet(build("yolov4-tiny", num_classes=2, img_size=64))
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    state = {**_state(3), "model": net.state_dict(), "cfg_text": format_cfg(net.spec)}
    plain = trained_network(save_checkpoint(state, tmp_path / "plain.pt"))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in plain.state_dict().items())
    smoothed = trained_network(save_checkpoint({**state, "ema": {"module": ema}}, tmp_path / "ema.pt"))
    assert all(torch.equal(v, ema[k]) for k, v in smoothed.state_dict().items())  # the EMA weights win
    assert smoothed.spec.yolo_layers[0].classes == 2
    with pytest.raises(CheckpointError, match=r"nocfg.pt: not a yolo4 training checkpoint \(no network"):
        trained_network(save_checkpoint(_state(1), tmp_path / "nocfg.pt"))
    with pytest.raises(CheckpointError, match=r"other.pt: the weights are for another network"):
        trained_network(save_checkpoint({**state, "model": {"w": torch.ones(1)}}, tmp_path / "other.pt"))
