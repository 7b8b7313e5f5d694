"""yolo4.viz.plots writes real, non-empty PNGs."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from yolo4.evaluation.metrics import coco_evaluate
from yolo4.viz.plots import plot_confusion_matrix, plot_pr_curves, plot_training_curves


@pytest.fixture(scope="module")
def metrics():
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(6):
        xy = rng.uniform(0, 300, (5, 2))
        gb = np.concatenate([xy, xy + rng.uniform(20, 120, (5, 2))], axis=1)
        gc = rng.integers(0, 3, 5)
        gts.append((gb, gc))
        pb = gb + rng.normal(0, 6, gb.shape)
        preds.append((pb, rng.uniform(0.1, 1, 5), np.where(rng.random(5) < 0.8, gc, (gc + 1) % 3)))
    return coco_evaluate(gts, preds, ["cat", "dog", "bird", "never-seen"])


def _assert_png(path, min_hw=(200, 200)):
    assert path.exists() and path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)  # (H, W, 4) float
    assert img.shape[0] >= min_hw[0] and img.shape[1] >= min_hw[1]
    assert img[..., :3].std() > 0.01  # something was drawn, not a blank canvas


def test_pr_curves_png(tmp_path, metrics):
    _assert_png(plot_pr_curves(metrics, None, tmp_path / "pr.png"))


def test_confusion_matrix_png(tmp_path, metrics):
    _assert_png(plot_confusion_matrix(metrics, metrics.names, tmp_path / "deep" / "confusion.png"))
    _assert_png(plot_confusion_matrix(metrics, None, tmp_path / "counts.png", normalize=False))


def test_pr_curves_many_classes(tmp_path):
    names = [f"c{k}" for k in range(30)]
    gts = [(np.array([[0.0, 0, 50, 50], [60, 60, 100, 100]]), np.array([k, (k + 1) % 30])) for k in range(30)]
    preds = [(g[0] + 2, np.array([0.9, 0.4]), g[1]) for g in gts]
    m = coco_evaluate(gts, preds, names)
    _assert_png(plot_pr_curves(m, names, tmp_path / "pr30.png"))
    _assert_png(plot_confusion_matrix(m, names, tmp_path / "cm30.png"))


def test_training_curves_png(tmp_path):
    csv_path = tmp_path / "results.csv"
    rows = ["epoch,train/box_loss,train/obj_loss,lr,map50,map,note"]
    for e in range(12):
        m = "" if e % 3 else f"{0.1 + 0.05 * e:.3f}"  # evaluated every 3rd epoch only
        rows.append(f"{e},{1 / (e + 1):.4f},{0.5 / (e + 1):.4f},{0.01 * 0.9**e:.5f},{m},{m},text")
    csv_path.write_text("\n".join(rows) + "\n")
    out = plot_training_curves(csv_path, tmp_path / "curves.png")
    _assert_png(out, min_hw=(300, 600))
