"""Evaluation and training plots as PNG files (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


class Metrics(Protocol):
    """What the plots read from `yolo4.evaluation.metrics.Metrics`."""

    names: list[str]
    map50: float
    recall_thresholds: np.ndarray  # (101,)
    precision_curves: np.ndarray  # (C, 101)
    ap50_per_class: np.ndarray  # (C,)
    confusion: np.ndarray  # (C+1, C+1)
    confusion_conf: float
    confusion_iou: float


_MAX_LEGEND = 20  # classes named in a legend / annotated in a matrix at most


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def plot_pr_curves(metrics: Metrics, names: Sequence[str] | None, out_png: str | Path) -> Path:
    """Precision-recall curves at IoU 0.5 (COCO interpolation, 101 recall points), one per
    class with ground truth, and their mean in bold.

    Args:
        metrics: from `yolo4.evaluation.metrics.coco_evaluate`; uses `precision_curves` (C, 101).
        names: class names (default `metrics.names`).
    Returns:
        the PNG path.
    """
    names = list(names) if names is not None else metrics.names
    recall = metrics.recall_thresholds  # (101,)
    curves = metrics.precision_curves  # (C, 101)
    valid = [k for k in range(len(curves)) if not np.isnan(curves[k]).all()]
    fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    labelled = len(valid) <= _MAX_LEGEND
    for k in valid:
        label = f"{names[k]} {metrics.ap50_per_class[k]:.3f}" if labelled else None
        ax.plot(
            recall,
            curves[k],
            linewidth=1,
            alpha=0.8 if labelled else 0.35,
            color=None if labelled else "grey",
            label=label,
        )
    if valid:
        ax.plot(
            recall,
            np.nanmean(curves[valid], axis=0),
            linewidth=3,
            color="tab:blue",
            label=f"all classes mAP@0.5 {metrics.map50:.3f}",
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall at IoU 0.5 (COCO, 101-point)")
    ax.grid(alpha=0.3)
    if valid:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return _save(fig, out_png)


def plot_confusion_matrix(
    metrics: Metrics, names: Sequence[str] | None, out_png: str | Path, normalize: bool = True
) -> Path:
    """The confusion matrix (rows: true class, columns: predicted class, last row/column:
    background) at `metrics.confusion_conf` / `metrics.confusion_iou`.

    Args:
        normalize: colour by the fraction of each true-class row (counts are printed when
            there are at most 20 classes).
    Returns:
        the PNG path.
    """
    names = list(names) if names is not None else metrics.names
    m = metrics.confusion.astype(np.float64)  # (C+1, C+1)
    labels = names + ["background"]
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize else m
    n = len(labels)
    size = min(4 + 0.35 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), layout="constrained")
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "count")
    tick_fs = 8 if n <= 40 else 5
    ax.set_xticks(range(n), labels, rotation=90, fontsize=tick_fs)
    ax.set_yticks(range(n), labels, fontsize=tick_fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (score >= {metrics.confusion_conf:g}, IoU >= {metrics.confusion_iou:g})")
    if n <= _MAX_LEGEND + 1:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(m[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if shown[i, j] > 0.5 * shown.max() else "black",
                    )
    return _save(fig, out_png)


def _read_numeric_csv(csv_path: str | Path) -> dict[str, list[float]]:
    """Columns of a CSV whose every non-empty cell parses as a number (empty -> NaN)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for key in rows[0].keys() if rows else []:
        values = []
        for r in rows:
            cell = (r.get(key) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                break
        else:
            if not all(math.isnan(v) for v in values):
                columns[key.strip()] = values
    return columns


def plot_training_curves(csv_path: str | Path, out_png: str | Path) -> Path:
    """Every numeric column of a results CSV against its `epoch` column (row number when
    there is none), one small panel per column.

    Returns:
        the PNG path.
    """
    columns = _read_numeric_csv(csv_path)
    x = columns.pop("epoch", None)
    if x is None:
        x = list(range(len(next(iter(columns.values()), []))))
    keys = list(columns)
    ncols = min(5, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), layout="constrained", squeeze=False)
    for ax, key in zip(axes.flat, keys):
        xs, ys = np.asarray(x, dtype=np.float64), np.asarray(columns[key], dtype=np.float64)
        ok = ~np.isnan(ys)  # columns filled only on some epochs (e.g. evaluation) stay connected
        ax.plot(xs[ok], ys[ok], marker="." if ok.sum() < 50 else None, linewidth=1.5)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if not keys:
        axes.flat[0].text(0.5, 0.5, f"no numeric columns in {Path(csv_path).name}", ha="center")
    return _save(fig, out_png)


def plot_search(
    trials: Sequence[dict],
    keys: Sequence[str],
    out_png: str | Path,
    ranges: Mapping[str, tuple[float, float, bool]] | None = None,
) -> Path:
    """A hyper-parameter search at a glance: fitness per trial (the best so far as a line), then
    one panel per parameter with each trial's value against its fitness (the best trial starred,
    trial 0, the defaults, ringed; pruned trials as crosses, at the fitness they had when stopped).

    Args:
        trials: one dict per finished trial: "trial" (int), "status" ("done", "pruned" or
            "failed"), "fitness" (float, NaN when none), and each key of `keys` (a number, or any
            value for categorical parameters).
        keys: the parameters, one panel each.
        ranges: {key: (low, high, log)}: a numeric panel's x axis spans its searched range, on a
            log scale when `log`.
    Returns:
        the PNG path.
    """
    ranges = ranges or {}
    style = {"done": dict(marker="o", color="tab:blue"), "pruned": dict(marker="x", color="tab:orange")}
    scored = [t for t in trials if math.isfinite(t["fitness"]) and t["status"] in style]
    best = max((t for t in scored if t["status"] == "done"), key=lambda t: t["fitness"], default=None)
    first = next((t for t in scored if t["trial"] == 0), None)
    marks = {
        "defaults": dict(s=130, facecolors="none", edgecolors="black"),
        "best": dict(s=170, marker="*", color="tab:red", edgecolors="black"),
    }
    n = 1 + len(keys)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows), layout="constrained", squeeze=False)
    ax = axes.flat[0]
    labels = {"done": "done", "pruned": "pruned (when stopped)"}
    for status, st in style.items():
        pts = [(t["trial"], t["fitness"]) for t in scored if t["status"] == status]
        if pts:
            ax.scatter(*zip(*pts), s=22, label=labels[status], **st)
    done = sorted((t["trial"], t["fitness"]) for t in scored if t["status"] == "done")
    if done:
        ax.plot(
            [d[0] for d in done], np.maximum.accumulate([d[1] for d in done]), color="tab:green", label="best so far"
        )
    for t, mark in ((first, "defaults"), (best, "best")):
        if t is not None:
            ax.scatter([t["trial"]], [t["fitness"]], zorder=3, label=mark, **marks[mark])
    ax.set_title("fitness per trial (0.1 mAP50 + 0.9 mAP50-95)", fontsize=9)
    ax.set_xlabel("trial", fontsize=8)
    ax.legend(fontsize=7)
    for ax, key in zip(list(axes.flat)[1:], keys):
        values = [t[key] for t in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        cats = [] if numeric else sorted({str(v) for v in values})

        def x(v, numeric=numeric, cats=cats) -> float:
            return float(v) if numeric else float(cats.index(str(v)))

        for status, st in style.items():
            pts = [(x(t[key]), t["fitness"]) for t in scored if t["status"] == status]
            if pts:
                ax.scatter(*zip(*pts), s=18, alpha=0.8, **st)
        for t, mark in ((first, "defaults"), (best, "best")):
            if t is not None:
                ax.scatter([x(t[key])], [t["fitness"]], zorder=3, **marks[mark])
        if not numeric:
            ax.set_xticks(range(len(cats)), cats, fontsize=7)
        elif key in ranges:
            low, high, log = ranges[key]
            pad = 0.0 if log else 0.03 * (high - low)
            ax.set_xlim(low - pad, high + pad)
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, out_png)
