"""The demo (`yolo4 train --demo`) end to end at a toy size (slow: it makes the 300-image val split)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.training.demo import DemoConfig, run_demo

# what the demo may set itself: where and how big, how long, how it validates; the recipe is the defaults'
DEMO_OWN_FIELDS = {
    "data", "out", "device", "progress", "seed", "img_size", "small_img_size", "small_img_epochs", "batch",
    "epochs", "time_budget_min", "max_val_images", "val_every", "val_img_size",
}  # fmt: skip


def test_demo_trains_with_the_defaults_a_user_gets():
    cfg = DemoConfig().train_config("d", "o", torch.device("cpu"))
    base = TrainConfig()
    differ = {f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg, f.name) != getattr(base, f.name)}
    assert differ <= DEMO_OWN_FIELDS, f"the demo sets recipe fields of its own: {sorted(differ - DEMO_OWN_FIELDS)}"


def test_demo_config_uses_time_budget_on_cpu_only(monkeypatch):
    from yolo4.training import demo as demo_mod

    d = DemoConfig()
    for native, minutes in [(torch.bfloat16, d.train_minutes), (None, d.fp32_train_minutes)]:
        monkeypatch.setattr(demo_mod, "autocast_dtype", lambda cfg, device, n=native: n)
        cpu = d.train_config("d", "o", torch.device("cpu"))
        assert cpu.time_budget_min == minutes and cpu.model == "yolov4-tiny" and cpu.weights is None
    assert d.fp32_train_minutes + 1.0 <= 15  # evaluation and detection fit in the 15 minutes
    gpu = DemoConfig().train_config("d", "o", torch.device("cuda", 0))
    assert gpu.time_budget_min is None and gpu.epochs == DemoConfig().gpu_epochs


def test_demo_trains_at_the_small_size_on_cpus_without_bf16(monkeypatch):
    from yolo4.training import demo as demo_mod

    for native, sizes in [(torch.bfloat16, (256, 192, 0.5, 320, 16)), (None, (256, 192, 0.75, 320, 8))]:
        monkeypatch.setattr(demo_mod, "autocast_dtype", lambda cfg, device, d=native: d)
        cfg = DemoConfig().train_config("d", "o", torch.device("cpu"))
        assert (cfg.img_size, cfg.small_img_size, cfg.small_img_epochs, cfg.val_img_size, cfg.batch) == sizes
    gpu = DemoConfig().train_config("d", "o", torch.device("cuda", 0))  # (a GPU is never the fp32 case)
    assert (gpu.img_size, gpu.small_img_size) == (256, 192)


def test_threads_leave_the_cores_other_jobs_use(monkeypatch):
    import os

    from yolo4.training import demo as demo_mod

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for busy, threads in [(0.0, 2), (0.5, 2), (0.8, 1), (1.1, 1), (3.0, 1)]:
        monkeypatch.setattr(demo_mod, "_busy_cores", lambda s, b=busy: b)
        assert demo_mod.cpu_threads() == threads, busy


def test_busy_cores_converts_psutil_percent_to_cores(monkeypatch):
    import psutil

    from yolo4.training import demo as demo_mod

    seen = {}

    def percent(interval):
        seen["interval"] = interval
        return 37.5  # of all the machine's CPUs

    monkeypatch.setattr(psutil, "cpu_percent", percent)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    assert demo_mod._busy_cores(0.25) == pytest.approx(3.0) and seen["interval"] == 0.25


def test_a_slow_cpu_is_told_how_to_train_longer():
    """A real AVX2 CPU (AMD EPYC, Zen 3) fitted 5 epochs in the 13.5-minute budget (mAP50 0.43)."""
    from yolo4.training.demo import few_epochs_hint

    hint = few_epochs_hint(5, 13.5)
    assert "fitted 5 epochs in the 13.5-minute budget" in hint and "--demo --time-budget 30" in hint
    assert "--time-budget 15" in few_epochs_hint(10, 12.5)
    with pytest.raises(Yolo4Error, match="--time-budget must be a positive number of minutes, got 0"):
        run_demo("unused", device="cpu", minutes=0)
    from yolo4.training.train import train

    with pytest.raises(Yolo4Error, match="--time-budget must be a positive number of minutes, got -1"):
        train(TrainConfig(data="unused", time_budget_min=-1))  # `yolo4 train --time-budget` too, before any work


@pytest.mark.slow
def test_demo_leaves_everything_in_its_folder(tmp_path, capsys):
    demo = DemoConfig(
        num_train=32,
        epochs=2,
        batch=8,
        img_size=128,
        small_img_size=96,
        val_img_size=160,
        max_val_images=8,
        detect_images=2,
    )
    summary = run_demo(tmp_path / "demo", device="cpu", demo=demo, progress=False)
    out = tmp_path / "demo"
    for p in (
        "train/results.csv",
        "train/results.png",
        "train/best.weights",
        "train/best.cfg",
        "val/pr_curves.png",
        "val/confusion_matrix.png",
        "val/metrics.json",
        "summary.json",
        "detect/detections.json",
    ):
        assert (out / p).is_file(), p
    assert len(list((out / "detect").glob("*.jpg"))) == 2
    assert 0 <= summary["mAP50"] <= 1 and json.loads((out / "summary.json").read_text())["epochs"] == 2
    import csv

    rows = list(csv.DictReader((out / "train" / "results.csv").open()))
    assert [r["img_size"] for r in rows] == ["96", "128"]  # progressive resizing: half the epochs small
    assert "width=160" in (out / "train" / "best.cfg").read_text()  # exported at the evaluation size
    printed = capsys.readouterr().out
    assert "mAP50" in printed and "--time-budget" not in printed  # its 2 epochs were its plan, not the budget's
