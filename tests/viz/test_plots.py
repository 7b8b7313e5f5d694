"""yolo4.viz.plots: the figures hold the data they were given (read back from their axes), saved as PNGs."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from yolo4.evaluation.metrics import coco_evaluate
from yolo4.viz.plots import plot_confusion_matrix, plot_pr_curves, plot_search, plot_training_curves


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


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, captured before they are saved and closed."""
    from yolo4.viz import plots

    drawn = []
    save = plots._save

    def capture(fig, out_png):
        drawn.append(fig)
        return save(fig, out_png)

    monkeypatch.setattr(plots, "_save", capture)
    return drawn


def _assert_png(path, min_hw=(200, 200)):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)  # (H, W, 4) float
    assert img.shape[0] >= min_hw[0] and img.shape[1] >= min_hw[1]


def test_pr_curves_plot_each_class_and_their_mean(tmp_path, metrics, figures):
    _assert_png(plot_pr_curves(metrics, None, tmp_path / "pr.png"))
    (ax,) = figures[0].axes
    lines = ax.get_lines()
    with_gt = [k for k in range(4) if not np.isnan(metrics.precision_curves[k]).all()]
    assert with_gt == [0, 1, 2] and len(lines) == 3 + 1  # "never-seen" has no curve
    for line, k in zip(lines, with_gt):
        np.testing.assert_array_equal(line.get_xdata(), metrics.recall_thresholds)
        np.testing.assert_array_equal(line.get_ydata(), metrics.precision_curves[k])
        assert line.get_label() == f"{metrics.names[k]} {metrics.ap50_per_class[k]:.3f}"
    mean = lines[-1]
    np.testing.assert_allclose(mean.get_ydata(), np.nanmean(metrics.precision_curves[with_gt], axis=0))
    assert mean.get_linewidth() == 3 and f"{metrics.map50:.3f}" in mean.get_label()


def test_confusion_matrix_shows_row_fractions_and_counts(tmp_path, metrics, figures):
    _assert_png(plot_confusion_matrix(metrics, metrics.names, tmp_path / "deep" / "confusion.png"))
    plot_confusion_matrix(metrics, None, tmp_path / "counts.png", normalize=False)
    m = metrics.confusion.astype(float)  # (C+1, C+1)
    fractions = np.asarray(figures[0].axes[0].images[0].get_array())
    np.testing.assert_allclose(fractions, m / np.maximum(m.sum(1, keepdims=True), 1))
    np.testing.assert_allclose(fractions.sum(1)[m.sum(1) > 0], 1.0)
    np.testing.assert_array_equal(np.asarray(figures[1].axes[0].images[0].get_array()), m)
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [*metrics.names, "background"]
    counts = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert counts == {(i, j): int(m[i, j]) for i, j in zip(*np.nonzero(m))}


def test_pr_curves_many_classes(tmp_path, figures):
    names = [f"c{k}" for k in range(30)]
    gts = [(np.array([[0.0, 0, 50, 50], [60, 60, 100, 100]]), np.array([k, (k + 1) % 30])) for k in range(30)]
    preds = [(g[0] + 2, np.array([0.9, 0.4]), g[1]) for g in gts]
    m = coco_evaluate(gts, preds, names)
    plot_pr_curves(m, names, tmp_path / "pr30.png")
    plot_confusion_matrix(m, names, tmp_path / "cm30.png")
    lines = figures[0].axes[0].get_lines()
    assert len(lines) == 31 and all(line.get_color() == "grey" for line in lines[:30])  # too many to name
    assert not figures[1].axes[0].texts  # counts are not printed on a 31 x 31 matrix


def test_training_curves_plot_every_numeric_column(tmp_path, figures):
    csv_path = tmp_path / "results.csv"
    rows = ["epoch,train/box_loss,train/obj_loss,lr,map50,map,note"]
    for e in range(12):
        m = "" if e % 3 else f"{0.1 + 0.05 * e:.3f}"  # evaluated every 3rd epoch only
        rows.append(f"{e},{1 / (e + 1):.4f},{0.5 / (e + 1):.4f},{0.01 * 0.9**e:.5f},{m},{m},text")
    csv_path.write_text("\n".join(rows) + "\n")
    _assert_png(plot_training_curves(csv_path, tmp_path / "curves.png"), min_hw=(300, 600))
    panels = {ax.get_title(): ax for ax in figures[0].axes if ax.get_title()}
    assert list(panels) == ["train/box_loss", "train/obj_loss", "lr", "map50", "map"]  # not the text column
    (box,) = panels["train/box_loss"].get_lines()
    np.testing.assert_array_equal(box.get_xdata(), np.arange(12))
    np.testing.assert_allclose(box.get_ydata(), [round(1 / (e + 1), 4) for e in range(12)])
    (m50,) = panels["map50"].get_lines()  # only the evaluated epochs, joined
    np.testing.assert_array_equal(m50.get_xdata(), [0, 3, 6, 9])
    np.testing.assert_allclose(m50.get_ydata(), [0.1, 0.25, 0.4, 0.55])


def test_search_plot_shows_each_trial_against_each_parameter(tmp_path, figures):
    trials = [
        {"trial": 0, "status": "done", "fitness": 0.30, "lr": 0.01, "iou_loss": "ciou"},
        {"trial": 1, "status": "done", "fitness": 0.45, "lr": 0.02, "iou_loss": "giou"},
        {"trial": 2, "status": "pruned", "fitness": 0.10, "lr": 0.05, "iou_loss": "ciou"},
        {"trial": 3, "status": "failed", "fitness": float("nan"), "lr": 0.09, "iou_loss": "diou"},
        {"trial": 4, "status": "done", "fitness": 0.40, "lr": 0.003, "iou_loss": "ciou"},
    ]
    out = plot_search(trials, ["lr", "iou_loss"], tmp_path / "tune.png", {"lr": (0.001, 0.1, True)})
    _assert_png(out, min_hw=(300, 600))
    panels = {ax.get_title(): ax for ax in figures[0].axes if ax.get_title()}
    assert list(panels) == ["fitness per trial (0.1 mAP50 + 0.9 mAP50-95)", "lr", "iou_loss"]
    (best_line,) = panels["fitness per trial (0.1 mAP50 + 0.9 mAP50-95)"].get_lines()
    np.testing.assert_allclose(best_line.get_ydata(), [0.30, 0.45, 0.45])  # done trials 0, 1, 4: best so far
    lr = panels["lr"]
    assert lr.get_xscale() == "log" and lr.get_xlim() == pytest.approx((0.001, 0.1))
    done, pruned = lr.collections[0].get_offsets(), lr.collections[1].get_offsets()  # the failed trial has no point
    np.testing.assert_allclose(done, [[0.01, 0.30], [0.02, 0.45], [0.003, 0.40]])
    np.testing.assert_allclose(pruned, [[0.05, 0.10]])
    np.testing.assert_allclose(lr.collections[3].get_offsets(), [[0.02, 0.45]])  # the best, starred
    assert [t.get_text() for t in panels["iou_loss"].get_xticklabels()] == ["ciou", "giou"]
