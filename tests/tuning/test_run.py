"""`yolo4 tune` end to end on a tiny `shapes` set: a search of two one-epoch trials in-process and
through a local Ray instance writes the same files; a trial is pruned when the rule says so; a
search killed with SIGKILL resumes without repeating a finished trial (the cut one continues
from its last.pt); a resume with other settings is refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import yolo4
from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.tuning import run as tune_run
from yolo4.tuning.search import Trial
from yolo4.tuning.trial import run_trial

SPACE = "lr: {low: 0.001, high: 0.1, log: true}\nmomentum: [0.6, 0.98]\nmosaic: [0.0, 1.0]\n"
TRIAL_OPTIONS = [  # small and quick: bf16 autocast and precise BN cost more than they give at 64 px
    "burn_in=1",
    "amp=false",
    "precise_bn_batches=0",
    "ema_tau=5",
    "workers=0",
    "threads=1",
    "device=cpu",
    "batch=8",
    "img_size=64",
]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE)
    return path


def _tune(data, out, space, **kw):
    settings = dict(model="yolov4-tiny", trials=2, epochs_per_trial=1, space=space, out=out, backend="local")
    return yolo4.tune(data, options=TRIAL_OPTIONS, **{**settings, **kw})


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_search_files(out: Path, n: int) -> list[dict[str, str]]:
    assert {"tune.csv", "tune.png", "best.yaml", "search.json", "trials"} <= {p.name for p in out.iterdir()}
    rows = _rows(out / "tune.csv")
    assert [int(r["trial"]) for r in rows] == list(range(n))
    assert rows[0]["lr"] == "0.01" and rows[0]["momentum"] == "0.937" and rows[0]["mosaic"] == "1.0"  # the defaults
    assert all(r["status"] == "done" and float(r["fitness"]) >= 0 and r["epochs"] == "1" for r in rows)
    assert len({(r["lr"], r["momentum"], r["mosaic"]) for r in rows}) == n  # no repeats
    best = TrainConfig.from_yaml(out / "best.yaml")
    top = max(rows, key=lambda r: (float(r["fitness"]), -int(r["trial"])))
    assert (best.lr, best.momentum, best.mosaic) == (float(top["lr"]), float(top["momentum"]), float(top["mosaic"]))
    assert best.data.endswith("data.yaml") and best.img_size == 64 and best.model == "yolov4-tiny"
    for r in rows:  # every trial trained in its folder, with its parameters
        cfg = TrainConfig.from_dict(json.loads((out / "trials" / f"{int(r['trial']):03d}" / "config.json").read_text()))
        assert (cfg.lr, cfg.epochs, cfg.img_size, cfg.patience) == (float(r["lr"]), 1, 64, 0)
    return rows


@pytest.fixture(scope="module")
def local_search(tiny_data, space_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "search"
    return _tune(tiny_data, out, space_file), out


def test_search_in_process(local_search, tiny_data, space_file):
    result, out = local_search
    rows = _check_search_files(out, 2)
    assert result.backend == "local" and len(result.trials) == 2 and result.stopped is None
    assert result.best is not None and result.best.fitness == pytest.approx(
        max(float(r["fitness"]) for r in rows), abs=1e-5
    )
    # the same command again: nothing left to run, nothing run again
    again = _tune(tiny_data, out, space_file)
    assert [t.index for t in again.trials] == [0, 1]
    assert _rows(out / "tune.csv") == rows


def test_search_on_ray_writes_the_same_files(local_search, tiny_data, space_file, tmp_path):
    pytest.importorskip("ray.tune", reason="Ray Tune not installed (pip install 'yolo4[tune]')")
    result = _tune(tiny_data, tmp_path / "ray", space_file, backend="ray", trials=2)
    assert result.backend == "ray"
    rows = _check_search_files(tmp_path / "ray", 2)
    local_rows = _rows(local_search[1] / "tune.csv")
    assert list(rows[0]) == list(local_rows[0])  # the same columns
    assert rows[0]["fitness"] == local_rows[0]["fitness"]  # trial 0 trains the same either way


def test_a_pruned_trial_stops_at_its_rung(tiny_data, tmp_path):
    base = TrainConfig.from_args(TRIAL_OPTIONS, base=TrainConfig(data=str(tiny_data), progress=False))
    seen = []

    def report(epoch, fitness, history):
        seen.append((epoch, fitness, len(history)))
        return epoch == 1

    trial = run_trial(base, Trial(4, {"lr": 0.02}), tmp_path / "004", epochs=3, report=report)
    assert trial.status == "pruned" and trial.epochs == 1 and len(trial.curve) == 1
    assert [s[0] for s in seen] == [1] and trial.params == {"lr": 0.02}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_search_resumes_without_repeating_trials(tiny_data, space_file, tmp_path, monkeypatch):
    out = tmp_path / "search"
    args = ["--data", str(tiny_data), "--model", "yolov4-tiny", "--trials", "2", "--epochs-per-trial", "2"]
    args += ["--space", str(space_file), "--out", str(out), "--backend", "local", "--no-prune"]
    for o in TRIAL_OPTIONS:
        args += ["--set", o]
    src = str(Path(yolo4.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "yolo4", "tune", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    cut = out / "trials" / "001" / "last.pt"
    deadline = time.time() + 600
    while not cut.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode(errors="replace")
    assert cut.exists(), f"the search ended before trial 1 checkpointed an epoch:\n{err[-2000:]}"
    before = _rows(out / "tune.csv")
    assert [r["trial"] for r in before] == ["0"]  # killed during trial 1's second epoch

    calls = []
    real = tune_run.run_trial

    def spy(base, trial, trial_dir, epochs, report):
        calls.append((trial.index, (Path(trial_dir) / "last.pt").exists()))
        return real(base, trial, trial_dir, epochs, report)

    monkeypatch.setattr(tune_run, "run_trial", spy)
    _tune(tiny_data, out, space_file, trials=2, epochs_per_trial=2, prune=False)
    assert calls == [(1, True)]  # trial 0 not run again; trial 1 continued from its last.pt
    after = _rows(out / "tune.csv")
    assert after[0] == before[0] and [r["trial"] for r in after] == ["0", "1"]
    history = _rows(out / "trials" / "001" / "results.csv")
    assert [r["epoch"] for r in history] == ["1", "2"]


def test_resume_with_other_settings_is_refused(tiny_data, space_file, tmp_path):
    out = tmp_path / "search"
    out.mkdir()
    (out / "search.json").write_text('{"base": {}, "space": {}, "epochs_per_trial": 1}')
    with pytest.raises(Yolo4Error, match="holds another search .*the search space"):
        _tune(tiny_data, out, space_file)
    with pytest.raises(Yolo4Error, match="unknown tune setting generations"):
        _tune(tiny_data, tmp_path / "x", space_file, generations=3)
    with pytest.raises(Yolo4Error, match="trials .* must be >= 1"):
        _tune(tiny_data, tmp_path / "x", space_file, trials=0)
