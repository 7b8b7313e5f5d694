"""The demo (`yolo4 train --demo`) end to end at a toy size (slow: it makes the 300-image val split)."""

from __future__ import annotations

import json

import pytest
import torch

from yolo4.engine.demo import DemoConfig, run_demo


def test_demo_config_uses_time_budget_on_cpu_only():
    cpu = DemoConfig().train_config("d", "o", torch.device("cpu"))
    assert cpu.time_budget_min == DemoConfig().train_minutes and cpu.model == "yolov4-tiny" and cpu.weights is None
    gpu = DemoConfig().train_config("d", "o", torch.device("cuda", 0))
    assert gpu.time_budget_min is None and gpu.epochs == DemoConfig().gpu_epochs


@pytest.mark.slow
def test_demo_leaves_everything_in_its_folder(tmp_path, capsys):
    demo = DemoConfig(num_train=32, epochs=1, batch=8, img_size=128, max_val_images=8, detect_images=2)
    summary = run_demo(tmp_path / "demo", device="cpu", demo=demo, progress=False)
    out = tmp_path / "demo"
    for p in ("train/results.csv", "train/results.png", "train/best.weights", "train/best.cfg",
              "val/pr_curves.png", "val/confusion_matrix.png", "val/metrics.json", "summary.json",
              "detect/detections.json"):
        assert (out / p).is_file(), p
    assert len(list((out / "detect").glob("*.jpg"))) == 2
    assert 0 <= summary["mAP50"] <= 1 and json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert "mAP50" in capsys.readouterr().out
