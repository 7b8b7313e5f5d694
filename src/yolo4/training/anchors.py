"""Anchors that fit the data: how well a model's anchors cover the training boxes, IoU k-means
anchors, and the check a training run makes at its start (darknet's `calc_anchors`, YOLOv5's
autoanchor), also behind `yolo4 anchors`.

    wh = train_box_sizes(train_set, img_size=416)      # (N, 2) box sizes in input pixels
    fit = anchor_fit(wh, [(10, 14), (23, 27), ...])    # AnchorFit(mean_iou=0.61, bpr=0.99)
    report = check_anchors(spec, wh, img_size=416)     # the cfg's anchors against k-means
    report.use_kmeans, report.summary(), report.cfg_line()

Two numbers describe a set of anchors on a set of boxes (both over the anchors some head uses):

* mean IoU: the mean over boxes of the IoU (centres aligned) with the best anchor, darknet's
  `avg IoU`; the training's assignment gives each box that anchor.
* best possible recall (BPR): the fraction of boxes for which some anchor is within a factor
  `RATIO_LIMIT` (4) of the box in both width and height (YOLOv5's measure): a scaled head
  (`new_coords=1`) cannot predict a box more than 4x its anchor, and a logit head learns such
  boxes slowly.

`check_anchors` prefers k-means when the cfg's anchors leave boxes out (BPR < `MIN_BPR`) or fit
clearly worse (mean IoU below `MIN_IOU_RATIO` of k-means'), the rules YOLOv5 and darknet's
advice follow.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolo4.errors import Yolo4Error

RATIO_LIMIT = 4.0  # a box counts as reachable from an anchor within this factor in w and h
MIN_BPR = 0.98  # below this best possible recall the cfg's anchors are replaced
MIN_IOU_RATIO = 0.9  # ... and below this fraction of k-means' mean IoU


def wh_iou_np(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors sharing a centre. wh (N, 2), anchors (K, 2) -> (N, K) float64."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None], anchors[None]).prod(-1)  # (N, K)
    return inter / (wh.prod(-1)[:, None] + anchors.prod(-1)[None] - inter)


@dataclass(frozen=True)
class AnchorFit:
    """How anchors fit boxes: mean best IoU, best possible recall, and IoU > 0.5 recall."""

    mean_iou: float
    bpr: float
    recall50: float  # fraction of boxes whose best anchor has IoU > 0.5 (darknet's calc_anchors)

    def __str__(self) -> str:
        return f"mean IoU {self.mean_iou:.3f}, BPR {self.bpr:.3f}"


def anchor_fit(wh: np.ndarray, anchors: Sequence[tuple[float, float]], ratio_limit: float = RATIO_LIMIT) -> AnchorFit:
    """How `anchors` (K, 2) fit the boxes `wh` (N, 2), both (width, height) in input pixels."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if not len(wh):
        return AnchorFit(float("nan"), float("nan"), float("nan"))
    a = np.asarray(anchors, np.float64).reshape(-1, 2)
    best_iou = wh_iou_np(wh, a).max(1)  # (N,)
    r = wh[:, None] / a[None]  # (N, K, 2)
    worst_side = np.minimum(r, 1 / r).min(-1)  # (N, K): 1 = same size, 0.25 = 4x off on one side
    reachable = worst_side.max(1) >= 1 / ratio_limit  # (N,)
    return AnchorFit(float(best_iou.mean()), float(reachable.mean()), float((best_iou > 0.5).mean()))


def kmeans_anchors(wh: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> list[tuple[float, float]]:
    """darknet `calc_anchors`: k-means of box sizes with 1 - IoU as the distance.

    Args:
        wh: (N, 2) box widths and heights in input pixels.
    Returns:
        k (w, h) anchors sorted by area.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    rng = np.random.default_rng(seed)
    if len(wh) < k:
        raise Yolo4Error(f"k-means anchors: {len(wh)} boxes for {k} anchors")
    centres = wh[rng.choice(len(wh), k, replace=False)]
    for _ in range(iters):
        assign = wh_iou_np(wh, centres).argmax(1)
        new = np.array([np.median(wh[assign == j], 0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    centres = centres[np.argsort(centres.prod(-1))]
    return [(float(round(w, 1)), float(round(h, 1))) for w, h in centres]


def train_box_sizes(dataset, img_size: int, letterbox: bool = False) -> np.ndarray:
    """(N, 2) widths and heights of every training box in input pixels at `img_size`, each image
    resized as training resizes it: stretched to img_size x img_size (yolo4's training default,
    darknet's letter_box=0), or with `letterbox` scaled by img_size over its longer side.
    The input to the anchor check and k-means. `dataset`: anything with `labels(i)`, `image_hw`."""
    out = []
    for i in range(len(dataset)):
        boxes = dataset.labels(i)[0]
        if not len(boxes):
            continue
        h, w = (float(v) for v in dataset.image_hw[i])
        scale = np.array([img_size / w, img_size / h]) if not letterbox else np.full(2, img_size / max(h, w))
        out.append((boxes[:, 2:] - boxes[:, :2]) * scale)
    return np.concatenate(out) if out else np.zeros((0, 2))


def used_anchors(spec) -> list[tuple[float, float]]:
    """The anchors some [yolo] head of `spec` uses (its `mask`), in anchor-list order."""
    heads = spec.yolo_layers
    used = sorted({m for y in heads for m in y.mask})
    return [tuple(heads[0].anchors[m]) for m in used]


def set_kmeans_anchors(spec, train_wh: np.ndarray, img_size: int, seed: int = 0) -> None:
    """Refit the anchors of every [yolo] layer of `spec` (in place) to the training boxes.

    As many anchors are fitted as the heads use in all, and every one is used: the finest grid
    gets the smallest ones (darknet's advice when anchors are recalculated). This also retires
    yolov4-tiny's unused anchor 0 (its official masks are 3,4,5 and 1,2,3).

    Args:
        train_wh: (N, 2) box widths and heights in input pixels at `img_size`.
    """
    anchors = kmeans_anchors(train_wh, sum(len(y.mask) for y in spec.yolo_layers), seed=seed)
    _assign_anchors(spec, anchors, img_size)


def _assign_anchors(spec, anchors: Sequence[tuple[float, float]], img_size: int) -> None:
    """Give every [yolo] layer of `spec` the anchor list `anchors` (sorted by area), the finest
    grid the first ones (in place)."""
    from yolo4.darknet import infer_shapes
    from yolo4.darknet.layers import YoloLayer

    heads = [i for i, layer in enumerate(spec.layers) if isinstance(layer, YoloLayer)]
    shapes = infer_shapes(spec, (img_size, img_size))
    by_fineness = sorted(heads, key=lambda i: -shapes[i].out_chw[1] * shapes[i].out_chw[2])
    start = 0
    for i in by_fineness:
        layer = spec.layers[i]
        layer.mask = list(range(start, start + len(layer.mask)))
        start += len(layer.mask)
    for i in heads:
        spec.layers[i].anchors = [tuple(a) for a in anchors]
        spec.layers[i].num = len(anchors)


@dataclass(frozen=True)
class AnchorReport:
    """The cfg's anchors and k-means anchors on the training boxes, and which to train with."""

    img_size: int
    boxes: int
    cfg_anchors: list[tuple[float, float]]  # the ones the heads use
    cfg_fit: AnchorFit
    kmeans: list[tuple[float, float]] | None  # None: too few boxes
    kmeans_fit: AnchorFit | None

    @property
    def use_kmeans(self) -> bool:
        """k-means when the cfg's anchors leave boxes out or fit clearly worse."""
        if self.kmeans_fit is None:
            return False
        return self.cfg_fit.bpr < MIN_BPR or self.cfg_fit.mean_iou < MIN_IOU_RATIO * self.kmeans_fit.mean_iou

    def summary(self) -> str:
        """One line: both fits and the choice."""
        km = f"k-means {self.kmeans_fit}" if self.kmeans_fit is not None else "k-means: too few boxes"
        pick = "k-means" if self.use_kmeans else "the cfg's"
        return f"anchors on {self.boxes} training boxes at {self.img_size} px: cfg {self.cfg_fit}; {km} -> {pick}"

    def cfg_line(self) -> str:
        """The k-means anchors as a darknet cfg line (`anchors = 12,16, 19,36, ...`)."""
        anchors = self.kmeans if self.kmeans is not None else self.cfg_anchors
        return "anchors = " + ",  ".join(f"{round(w)},{round(h)}" for w, h in anchors)


def check_anchors(spec, train_wh: np.ndarray, img_size: int, seed: int = 0) -> AnchorReport:
    """The fit of `spec`'s anchors (those its heads use) and of k-means anchors (as many) on the
    training boxes `train_wh` (N, 2) in input pixels at `img_size`."""
    cfg = used_anchors(spec)
    k = sum(len(y.mask) for y in spec.yolo_layers)
    km = kmeans_anchors(train_wh, k, seed=seed) if len(train_wh) >= 2 * k else None
    return AnchorReport(
        img_size,
        len(train_wh),
        cfg,
        anchor_fit(train_wh, cfg),
        km,
        anchor_fit(train_wh, km) if km is not None else None,
    )


def run_anchors(
    data: str | os.PathLike, model: str = "yolov4-tiny", img_size: int = 416, seed: int = 0
) -> AnchorReport:
    """`yolo4 anchors`: print how `model`'s anchors and k-means anchors fit `data`'s training
    boxes at `img_size`, and the k-means anchors as a cfg line; returns the report."""
    from yolo4.data.dataset import load_dataset
    from yolo4.models.zoo import resolve_spec

    if img_size <= 0 or img_size % 32:
        raise Yolo4Error(f"--img-size {img_size}: input sizes must be positive multiples of 32")
    train_set = load_dataset(data, "train", progress=False)
    spec = resolve_spec(model, img_size=img_size)
    wh = train_box_sizes(train_set, img_size)
    if not len(wh):
        raise Yolo4Error(f"{data}: the training split has no boxes to fit anchors to")
    report = check_anchors(spec, wh, img_size, seed)
    print(f"{model} on {data} ({len(train_set)} training images, {report.boxes} boxes, {img_size} px):")
    print(f"  cfg anchors     {_fmt(report.cfg_anchors)}: {report.cfg_fit}, IoU>0.5 for {report.cfg_fit.recall50:.1%}")
    if report.kmeans is not None and report.kmeans_fit is not None:
        kf = report.kmeans_fit
        print(f"  k-means anchors {_fmt(report.kmeans)}: {kf}, IoU>0.5 for {kf.recall50:.1%}")
        verdict = "k-means (the cfg's fit badly)" if report.use_kmeans else "the cfg's (they fit well enough)"
        print(f"  yolo4 train would use {verdict}; as cfg lines (every anchor used, finest grid first):")
        fitted = copy.deepcopy(spec)
        _assign_anchors(fitted, report.kmeans, img_size)
        print(f"  {report.cfg_line()}")
        for n, y in enumerate(fitted.yolo_layers):
            print(f"  [yolo] #{n + 1}: mask = {','.join(str(m) for m in y.mask)}")
    else:
        print(f"  too few boxes ({report.boxes}) for k-means")
    return report


def _fmt(anchors: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{round(w)}x{round(h)}" for w, h in anchors)
