"""Fault tests of whole training runs: SIGTERM/SIGINT stop at the next step with a checkpoint and
`--resume` continues as the uninterrupted run would have (same losses, same weights); kill -9
loses no completed epoch; two trainings cannot share a run folder; a checkpoint the disk
refuses keeps the previous one and stops the run with a message.

The random-point variants (kill -9 and SIGTERM at random moments of a subprocess, repeatedly,
then the final weights against an uninterrupted run) are `slow`."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from yolo4.errors import Yolo4Error
from yolo4.training.checkpoint import CheckpointError, RunLock, load_checkpoint
from yolo4.training.config import TrainConfig
from yolo4.training.hooks import Hook
from yolo4.training.train import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STRIKES = 5  # interruptions of the random-moment runs


@pytest.fixture(scope="module", autouse=True)
def _no_training_plots():
    """results.png is not what these tests look at, and drawing it takes most of a tiny run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("yolo4.viz.plots.plot_training_curves", lambda *a, **k: None)
        yield


def _cfg(data, out, **kw) -> TrainConfig:
    """2 epochs of 4 steps (16 images, batch 4) at 64 px, with the random augmentations on,
    validated after the last epoch only."""
    base = dict(
        data=str(data), model="yolov4-tiny", img_size=64, epochs=2, batch=4, burn_in=2, workers=0, device="cpu",
        progress=False, out=str(out), mosaic=0.5, flip=0.5, amp=False, export=False, anchors="cfg", val_every=2,
        precise_bn_batches=0, cache_images=True,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "yolo4", "train", *args]


def _cli_args(data, out, epochs: int, workers: int = 0) -> list[str]:
    return _cli(
        "--data", str(data), "--model", "yolov4-tiny", "--img-size", "64", "--epochs", str(epochs), "--batch", "4",
        "--workers", str(workers), "--device", "cpu", "--out", str(out), "--set", "burn_in=2", "--set", "mosaic=0.5",
        "--set", "progress=0", "--set", "amp=0", "--set", "export=0", "--set", "anchors=cfg",
    )  # fmt: skip


def assert_same_run(a: dict, b: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Two checkpoints of the same run: same steps, same per-epoch losses, same weights (model and EMA)."""
    assert a["epoch"] == b["epoch"] and a["step"] == b["step"]
    assert [r["epoch"] for r in a["history"]] == [r["epoch"] for r in b["history"]]
    for key in ("train/box", "train/obj", "train/cls", "train/loss"):
        assert [r[key] for r in a["history"]] == pytest.approx([r[key] for r in b["history"]], rel=rtol), key
    for part in ("model", "ema"):
        sa = a[part] if part == "model" else a[part]["module"]
        sb = b[part] if part == "model" else b[part]["module"]
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=atol, msg=f"{part}: {k}")


class _SignalAt(Hook):
    """Sends `sig` to this process during global step `step` (as a scheduler would, from outside)."""

    def __init__(self, sig: int, step: int):
        self.sig, self.step = sig, step

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.fixture(scope="module")
def straight_run(tiny_data, tmp_path_factory):
    """The uninterrupted run: its last checkpoint."""
    out = tmp_path_factory.mktemp("straight")
    result = train(_cfg(tiny_data, out))
    assert result.signal is None and result.epochs == 2
    return load_checkpoint(out / "last.pt")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_the_next_step_and_resume_reproduces_the_uninterrupted_run(
    tiny_data, straight_run, tmp_path, sig, capsys
):
    """The fast, deterministic variant: the signal arrives in epoch 2 (step 5 of 8); the run stops
    after step 6 with last.pt at that step; --resume runs steps 7-8 with the data order, learning
    rates and random state of the uninterrupted run, so the loss curve and the weights are its."""

    before = signal.getsignal(sig)  # not always the default: Ray, run earlier in this process, sets its own
    cut = train(_cfg(tiny_data, tmp_path / "cut"), hooks=[_SignalAt(sig, 5)])
    assert cut.signal == sig and cut.epochs == 1 and cut.stopped == f"{signal.Signals(sig).name} received"
    err = capsys.readouterr().err
    assert f"{signal.Signals(sig).name}: stopped after epoch 2, step 2 (6 steps in all)" in err
    assert f"yolo4 train --resume {tmp_path / 'cut'}" in err
    mid = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (mid["epoch"], mid["epoch_step"], mid["step"]) == (1, 2, 6)
    assert signal.getsignal(sig) is before  # the run's handler is gone, the previous one restored

    resumed = train(TrainConfig(resume=str(tmp_path / "cut"), device="cpu", workers=0, progress=False))
    assert resumed.signal is None and resumed.epochs == 2
    assert "2 steps into epoch 2" in capsys.readouterr().err
    assert_same_run(straight_run, load_checkpoint(tmp_path / "cut" / "last.pt"))


def test_two_trainings_into_one_run_folder_are_refused(tiny_data, tmp_path, capsys):
    from yolo4.cli import main

    class _SecondTraining(Hook):
        def on_step_end(self, state) -> None:
            if state.step == 1:
                with pytest.raises(CheckpointError, match=rf"run is in use by another training \(pid {os.getpid()} on"):
                    train(_cfg(tiny_data, tmp_path / "run"))
                self.code = main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--device", "cpu"])

    second = _SecondTraining()
    first = train(_cfg(tiny_data, tmp_path / "run", epochs=1), hooks=[second])
    assert second.code == 2 and "is in use by another training" in capsys.readouterr().err
    assert first.epochs == 1 and load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # untouched by the second
    RunLock(tmp_path / "run").acquire().release()  # the lock ended with the run


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))  # results and plots fit; a checkpoint does not
from yolo4.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_a_checkpoint_the_disk_refuses_stops_the_run_and_keeps_the_previous_one(tiny_data, tmp_path):
    class _StopAfterEpoch1(Hook):
        def on_epoch_end(self, state) -> None:
            state.stop = "test"

    train(_cfg(tiny_data, tmp_path / "run"), hooks=[_StopAfterEpoch1()])
    before = load_checkpoint(tmp_path / "run" / "last.pt")
    assert before["epoch"] == 1
    r = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, "train", "--resume", str(tmp_path / "run"), "--device", "cpu"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "last.pt: cannot write the checkpoint (file too large); the previous last.pt is kept as it was" in r.stderr
    assert f"yolo4 train --resume {tmp_path / 'run'}` continues from the last checkpoint written" in r.stderr
    after = load_checkpoint(tmp_path / "run" / "last.pt")
    assert after["epoch"] == 1 and after["step"] == before["step"]
    assert not [p.name for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]
    done = train(TrainConfig(resume=str(tmp_path / "run" / "last.pt"), device="cpu", workers=0, progress=False))
    assert done.epochs == 2  # with space again, the run finishes from the kept checkpoint (named by file here)


def test_resume_names_a_checkpoint_of_another_network(tiny_data, tmp_path):
    class _StopAfterEpoch1(Hook):
        def on_epoch_end(self, state) -> None:
            state.stop = "test"

    train(_cfg(tiny_data, tmp_path / "run"), hooks=[_StopAfterEpoch1()])
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ckpt["model"] = {k: v[:1] if v.ndim else v for k, v in ckpt["model"].items()}  # another network's shapes
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    (tmp_path / "run" / "last.prev.pt").unlink(missing_ok=True)
    with pytest.raises(Yolo4Error, match=r"last.pt: the weights are for another network: .* is \(1, "):
        train(TrainConfig(resume=str(tmp_path / "run"), device="cpu", workers=0, progress=False))


# ------------------------------------------------------------------ subprocesses: kill -9 and SIGTERM
def _wait_for(pred, proc, deadline_s: float):
    end = time.time() + deadline_s
    while time.time() < end and proc.poll() is None:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    return None


def _checkpoint_epoch(path):
    try:
        return load_checkpoint(path)["epoch"]
    except CheckpointError:
        return None


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill9_then_resume_loses_no_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _cli_args(tiny_data, out, epochs=6), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen = _wait_for(lambda: (_checkpoint_epoch(out / "last.pt") or 0) >= 1, proc, 240)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    assert seen, "no checkpoint within the deadline"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = load_checkpoint(out / "last.pt")
    done = before["epoch"]
    assert 1 <= done < 6

    res = subprocess.run(_cli("--resume", str(out), "--device", "cpu", "--workers", "0"), env=ENV, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"after epoch {done}" in res.stderr
    after = load_checkpoint(out / "last.pt")
    assert after["epoch"] == 6
    assert [int(r["epoch"]) for r in after["history"]] == [1, 2, 3, 4, 5, 6]
    assert after["history"][:done] == before["history"][:done]  # the completed epochs are kept as they were
    assert len((out / "results.csv").read_text().strip().splitlines()) == 1 + 6


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("seed", [0, 1])
def test_kill9_and_sigterm_at_random_moments_then_resume_end_where_an_uninterrupted_run_ends(tiny_data, tmp_path, seed):
    """A 3-epoch run (12 steps) in a subprocess with a loader worker, interrupted again and again
    at random moments by kill -9 or by SIGTERM to its whole process group (workers included, as
    a scheduler does), resumed each time, ends with the uninterrupted run's weights: no completed
    epoch lost, nothing trained twice."""
    rng = random.Random(seed)
    straight = subprocess.Popen(_cli_args(tiny_data, tmp_path / "straight", 3, workers=1), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    log, began = [], None
    for line in straight.stderr or []:
        log.append(line)
        if line.startswith("train: ") and began is None:
            began = time.monotonic()
    assert straight.wait(timeout=900) == 0, "".join(log)[-2000:]
    # the moments are drawn within the training's own duration: a fast CPU trains these 12 steps
    # in a few seconds, and a fixed window longer than that would let every run finish uninterrupted
    window = 0.8 * (time.monotonic() - (began or time.monotonic()))
    out = tmp_path / "cut"
    args = _cli_args(tiny_data, out, 3, workers=1)
    interruptions = []
    for attempt in range(STRIKES + 1):  # STRIKES interruptions, then a run left to finish
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        lines: list[str] = []
        training = threading.Event()

        def read(stream=proc.stderr, lines=lines, training=training):
            for line in stream:
                lines.append(line)
                if line.startswith("train: "):  # set up (and, resumed, restored): the steps begin
                    training.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if attempt == STRIKES:
            assert proc.wait(timeout=900) == 0, "".join(lines)[-3000:]
            break
        training.wait(timeout=300)
        left = 3 - (_checkpoint_epoch(out / "last.pt") or 0)  # a resumed run has only its remaining epochs
        time.sleep(rng.uniform(0.0, window * max(left, 1) / 3))  # a random moment of the training
        if proc.poll() is not None:  # it finished first
            assert proc.returncode == 0, "".join(lines)[-3000:]
            break
        before = _checkpoint_epoch(out / "last.pt")
        how = ("SIGTERM", "SIGKILL")[attempt] if attempt < 2 else rng.choice(["SIGKILL", "SIGTERM"])  # both, then any
        os.killpg(proc.pid, getattr(signal, how))
        proc.wait(timeout=300)
        reader.join(timeout=60)
        err = "".join(lines)
        interruptions.append((how, before, proc.returncode))
        if how == "SIGTERM":  # stopped at the next step with a checkpoint (or ended: between two epochs, or
            # before the run's handler was installed, when no step has run and nothing is lost)
            assert proc.returncode in (128 + signal.SIGTERM, 0, -signal.SIGTERM), err[-3000:]
            assert "Traceback" not in err, err[-3000:]
            if proc.returncode and before != 3:  # (past its last step the run has no training to resume)
                assert "Resume it with:" in err, err[-3000:]
        after = _checkpoint_epoch(out / "last.pt")
        assert after is None or before is None or after >= before, "a completed epoch was lost"
        if (out / "last.pt").exists() or (out / "last.prev.pt").exists():
            args = _cli("--resume", str(out), "--device", "cpu", "--workers", "1")
    print("interruptions (signal, epochs checkpointed before, exit code):", interruptions)
    assert {how for how, _, _ in interruptions} == {"SIGTERM", "SIGKILL"}
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(out / "last.pt")
    assert_same_run(a, b, rtol=1e-4, atol=1e-5)
