"""Fault test: a training process killed with SIGKILL after an epoch was checkpointed is
resumed with `yolo4 train --resume` and loses no completed epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from yolo4.training.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yolo4.data.shapes import ShapesConfig, make_shapes

    cfg = ShapesConfig(num_train=16, num_val=4, img_size=64, size_range=(10, 32), num_objects=(1, 3))
    return make_shapes(tmp_path_factory.mktemp("shapes") / "shapes", cfg, workers=0, progress=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "yolo4", "train", *args]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill9_then_resume_loses_no_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _cli(
            "--data",
            str(tiny_data),
            "--model",
            "yolov4-tiny",
            "--img-size",
            "64",
            "--epochs",
            "6",
            "--batch",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--set",
            "burn_in=2",
            "--set",
            "mosaic=0",
            "--set",
            "progress=0",
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            seen = load_checkpoint(out / "last.pt")["epoch"]
        except CheckpointError:
            seen = 0
        if seen >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    assert seen >= 1, "no checkpoint within the deadline"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = load_checkpoint(out / "last.pt")
    done = before["epoch"]
    assert 1 <= done < 6

    res = subprocess.run(
        _cli("--resume", str(out), "--device", "cpu", "--workers", "0"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"after epoch {done}" in res.stderr
    after = load_checkpoint(out / "last.pt")
    assert after["epoch"] == 6
    assert [int(r["epoch"]) for r in after["history"]] == [1, 2, 3, 4, 5, 6]
    assert after["history"][:done] == before["history"][:done]  # the completed epochs are kept as they were
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 6
