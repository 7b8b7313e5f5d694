"""Detection accuracy: COCO metrics (pycocotools' COCOeval), darknet-style VOC mAP@0.5,
per-class precision-recall curves and a confusion matrix.

Every function here is pure and takes per-image lists (numpy arrays or torch tensors):

    gts[i]   = (boxes (N_i, 4) float xyxy pixels, class_ids (N_i,) int)
    preds[i] = (boxes (M_i, 4) float xyxy pixels, scores (M_i,) float, class_ids (M_i,) int)

Class ids are 0-based indices into `names`. Boxes become COCO `xywh` only inside
`coco_results` / `coco_evaluate`, which hand them to pycocotools.

Why darknet's mAP@0.5 is not COCO's AP50
----------------------------------------
`darknet detector map` and COCOeval both build a precision-recall curve per class at
IoU 0.5 and average interpolated precision, but they disagree on details:

1. Detections kept: COCOeval keeps the 100 highest-scoring detections per image
   (`maxDets=100`); darknet keeps every detection above its 0.005 threshold.
2. Matching: COCOeval matches a detection to the best *still unmatched* ground truth
   with IoU >= 0.5; darknet (like the VOC devkit) takes the ground truth with the highest
   IoU > 0.5 and counts a false positive when that one is already taken, even if another
   ground truth would have fitted.
3. Interpolation: COCO samples precision at 101 recall points; darknet uses 101 points for
   COCO-style runs, 11 points for VOC2007 (coarser) and the area under the curve otherwise.
4. Crowd regions and areas: COCOeval ignores detections on `iscrowd` ground truth and
   reports small/medium/large from annotation areas; darknet knows neither.
5. Classes without ground truth: COCO leaves them out of the mean; darknet averages them
   in as 0. Here both numbers leave them out (reported as NaN), so they stay comparable.

`darknet_voc_ap` reproduces the darknet/VOC rules (2, 3, 5 aside) with detections ranked
by confidence; it equals COCO's AP50 when no image has more than 100 detections and no
matching conflict occurs, which the tests check.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

GroundTruth = tuple[Any, Any]  # (boxes (N, 4) xyxy, class_ids (N,))
Prediction = tuple[Any, Any, Any]  # (boxes (M, 4) xyxy, scores (M,), class_ids (M,))

# COCOeval.stats order, as printed by COCOeval.summarize().
COCO_STATS = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
)
_COCO_STAT_LINES = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)

# The 80 training classes of COCO in darknet's order -> COCO's category ids (1..90).
COCO80_TO_COCO91 = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
)


# ---------------------------------------------------------------- result type
@dataclass
class Metrics:
    """Accuracy of a detector on a dataset (C = number of classes).

    COCO numbers come from pycocotools' COCOeval (IoU 0.50:0.95, maxDets 100 unless
    named); a value COCOeval reports as -1 (no ground truth in that category/area) is NaN.
    """

    names: list[str]
    map: float  # AP @ IoU 0.50:0.95
    map50: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    ar1: float
    ar10: float
    ar100: float
    ar_small: float
    ar_medium: float
    ar_large: float
    ap_per_class: np.ndarray  # (C,) AP@0.50:0.95, NaN for classes without ground truth
    ap50_per_class: np.ndarray  # (C,) AP@0.50 (COCO)
    darknet_map50_101: float  # darknet-style VOC mAP@0.5, 101-point interpolation
    darknet_map50_11: float  # darknet-style VOC mAP@0.5, 11-point (VOC2007) interpolation
    darknet_ap50_per_class_101: np.ndarray  # (C,)
    darknet_ap50_per_class_11: np.ndarray  # (C,)
    recall_thresholds: np.ndarray  # (101,) COCO's recall points 0, 0.01, ..., 1
    precision_curves: np.ndarray  # (C, 101) COCO interpolated precision at IoU 0.5, NaN rows: no gt
    confusion: np.ndarray  # (C+1, C+1) int64 counts [true class, predicted class]; index C = background
    confusion_conf: float  # score threshold used for the confusion matrix
    confusion_iou: float  # IoU threshold used for the confusion matrix
    num_gt: np.ndarray  # (C,) ground-truth boxes per class
    num_images_per_class: np.ndarray  # (C,) images containing the class
    num_images: int
    num_predictions: int
    speed: dict[str, float] = field(default_factory=dict)  # filled by evaluation.evaluate
    coco_gt_source: str = ""  # the COCO annotation file the COCO numbers used; "" = the boxes given
    skipped: list[str] = field(default_factory=list)  # images that could not be decoded, left out (evaluate)

    # ------------------------------------------------------------ derived numbers
    @property
    def precision_at_conf(self) -> np.ndarray:
        """(C,) precision of detections scoring >= `confusion_conf` (IoU `confusion_iou`)."""
        c = len(self.names)
        tp = np.diag(self.confusion)[:c].astype(np.float64)
        predicted = self.confusion[:, :c].sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(predicted > 0, tp / predicted, np.nan)

    @property
    def recall_at_conf(self) -> np.ndarray:
        """(C,) recall of detections scoring >= `confusion_conf` (IoU `confusion_iou`)."""
        c = len(self.names)
        tp = np.diag(self.confusion)[:c].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.num_gt > 0, tp / self.num_gt, np.nan)

    def to_dict(self) -> dict[str, float]:
        """Flat scalar metrics (JSON/CSV friendly): COCO stats, darknet-style mAPs, speed."""
        out: dict[str, float] = {k: float(getattr(self, k)) for k in COCO_STATS}
        out["darknet_map50_101"] = float(self.darknet_map50_101)
        out["darknet_map50_11"] = float(self.darknet_map50_11)
        out["num_images"] = float(self.num_images)
        out["num_predictions"] = float(self.num_predictions)
        out.update({k: float(v) for k, v in self.speed.items()})
        return out

    def per_class_dict(self) -> dict[str, dict[str, float]]:
        """{class name: {instances, images, precision, recall, ap50, ap, darknet_ap50}}."""
        p, r = self.precision_at_conf, self.recall_at_conf
        return {
            name: {
                "instances": int(self.num_gt[k]),
                "images": int(self.num_images_per_class[k]),
                "precision": float(p[k]),
                "recall": float(r[k]),
                "ap50": float(self.ap50_per_class[k]),
                "ap": float(self.ap_per_class[k]),
                "darknet_ap50": float(self.darknet_ap50_per_class_101[k]),
            }
            for k, name in enumerate(self.names)
        }

    def table(self, names: Sequence[str] | None = None) -> str:
        """Per-class table, the 'all' row first, then classes worst AP@0.5:0.95 first
        (classes without ground truth last; those that were not detected either are only
        counted). P and R are at score >= `confusion_conf`, IoU >= `confusion_iou`."""
        names = list(names) if names is not None else self.names
        p, r = self.precision_at_conf, self.recall_at_conf
        width = max([len("class")] + [len(n) for n in names])
        head = (
            f"{'class':>{width}} {'images':>7} {'instances':>9} {'P':>6} {'R':>6} "
            f"{'AP50':>6} {'AP50-95':>7} {'dn-AP50':>7}"
        )

        def row(name, images, inst, pk, rk, ap50, ap, dn) -> str:
            return (
                f"{name:>{width}} {images:>7d} {inst:>9d} {_fmt(pk):>6} {_fmt(rk):>6} "
                f"{_fmt(ap50):>6} {_fmt(ap):>7} {_fmt(dn):>7}"
            )

        tp_all = float(np.diag(self.confusion)[: len(names)].sum())
        pred_all = float(self.confusion[:, : len(names)].sum())
        gt_all = float(self.num_gt.sum())
        lines = [
            head,
            row(
                "all",
                self.num_images,
                int(gt_all),
                tp_all / pred_all if pred_all else math.nan,
                tp_all / gt_all if gt_all else math.nan,
                self.map50,
                self.map,
                self.darknet_map50_101,
            ),
        ]
        key = np.where(np.isnan(self.ap_per_class), np.inf, self.ap_per_class)
        predicted = self.confusion[:, : len(names)].sum(axis=0)  # (C,) confident detections per class
        hidden = 0
        for k in np.argsort(key, kind="stable"):
            if self.num_gt[k] == 0 and predicted[k] == 0:
                hidden += 1  # nothing to say about a class neither labelled nor detected
                continue
            lines.append(
                row(
                    names[k],
                    int(self.num_images_per_class[k]),
                    int(self.num_gt[k]),
                    p[k],
                    r[k],
                    self.ap50_per_class[k],
                    self.ap_per_class[k],
                    self.darknet_ap50_per_class_101[k],
                )
            )
        if hidden:
            lines.append(
                f"({hidden} classes with no ground truth and no detection scoring >= {self.confusion_conf:g} "
                "not listed)"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """COCOeval's twelve lines, the darknet-style mAPs (labelled), and speed when known."""
        lines = [f" {label} = {_fmt(getattr(self, k), 3)}" for k, label in zip(COCO_STATS, _COCO_STAT_LINES)]
        if self.coco_gt_source:
            lines.append(f" (COCO numbers against {self.coco_gt_source}: crowd regions ignored, sizes from its areas)")
        if self.skipped:
            lines.append(
                f" ({len(self.skipped)} image(s) could not be decoded and are left out: {self.skipped[0]}"
                + (f", and {len(self.skipped) - 1} more)" if len(self.skipped) > 1 else ")")
            )
        lines.append(
            f" darknet-style mAP@0.50 (VOC matching, 101-point)            = {_fmt(self.darknet_map50_101, 3)}"
        )
        lines.append(f" darknet-style mAP@0.50 (VOC matching, 11-point, VOC2007)    = {_fmt(self.darknet_map50_11, 3)}")
        if self.speed:
            lines.append(" " + speed_line(self.speed))
        return "\n".join(lines)


def speed_line(speed: dict[str, float]) -> str:
    """One line from evaluation.evaluate's timing dict (ms per image, FPS)."""
    parts = []
    for key, label in (("preprocess_ms", "pre-process"), ("inference_ms", "network"), ("nms_ms", "NMS")):
        if key in speed:
            parts.append(f"{speed[key]:.2f} ms {label}")
    text = "Speed: " + ", ".join(parts) + " per image"
    if "fps" in speed:
        text += f"; {speed['fps']:.1f} FPS without post-processing"
    for key in ("batch", "img_h", "img_w"):
        if key not in speed:
            return text
    return text + f" (batch {int(speed['batch'])}, {int(speed['img_h'])}x{int(speed['img_w'])})"


def comparison_table(labels: Sequence[str], metrics: Sequence[Metrics]) -> str:
    """One row per evaluated model (e.g. float vs int8 exports on the same images): COCO AP,
    AP50, AP75, darknet-style AP50 and the speed numbers."""
    width = max([len("model")] + [len(s) for s in labels])
    lines = [
        f"{'model':<{width}} {'AP':>6} {'AP50':>6} {'AP75':>6} {'dn-AP50':>7} "
        f"{'pre ms':>7} {'net ms':>7} {'NMS ms':>7} {'FPS':>7}"
    ]
    for label, m in zip(labels, metrics):
        sp = m.speed

        def ms(key: str, sp: dict = sp) -> str:
            return f"{sp[key]:.2f}" if key in sp else "-"

        fps = f"{sp['fps']:.1f}" if "fps" in sp else "-"
        lines.append(
            f"{label:<{width}} {_fmt(m.map):>6} {_fmt(m.map50):>6} {_fmt(m.map75):>6} "
            f"{_fmt(m.darknet_map50_101):>7} {ms('preprocess_ms'):>7} {ms('inference_ms'):>7} "
            f"{ms('nms_ms'):>7} {fps:>7}"
        )
    return "\n".join(lines)


def _fmt(x: float, digits: int = 3) -> str:
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.{digits}f}"


# ---------------------------------------------------------------- input handling
def _np(x: Any, dtype) -> np.ndarray:
    """A numpy array / torch tensor / sequence as a numpy array of `dtype` (read only: never written to)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _normalise(
    gts: Sequence[GroundTruth], preds: Sequence[Prediction], num_classes: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per-image float64 / int64 numpy arrays, checked for shape and class range."""
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} prediction images")
    g_out, p_out = [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        gb, gc = _np(g[0], np.float64).reshape(-1, 4), _np(g[1], np.int64).reshape(-1)
        pb, ps, pc = (
            _np(p[0], np.float64).reshape(-1, 4),
            _np(p[1], np.float64).reshape(-1),
            _np(p[2], np.int64).reshape(-1),
        )
        if len(gb) != len(gc):
            raise ValueError(f"image {i}: {len(gb)} ground-truth boxes but {len(gc)} class ids")
        if not len(pb) == len(ps) == len(pc):
            raise ValueError(f"image {i}: {len(pb)} predicted boxes, {len(ps)} scores, {len(pc)} class ids")
        for what, c in (("ground-truth", gc), ("predicted", pc)):
            if len(c) and (c.min() < 0 or c.max() >= num_classes):
                raise ValueError(
                    f"image {i}: {what} class id {int(c.max() if c.max() >= num_classes else c.min())} "
                    f"outside 0..{num_classes - 1}"
                )
        g_out.append((gb, gc))
        p_out.append((pb, ps, pc))
    return g_out, p_out


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair (torchvision's box_iou in float64). a: (N, 4) xyxy, b: (M, 4) xyxy ->
    (N, M) float64 (0 for empty unions)."""
    a_t = torch.from_numpy(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b_t = torch.from_numpy(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return box_iou(a_t, b_t).nan_to_num_(0.0).numpy()


# ---------------------------------------------------------------- COCO (pycocotools)
def coco_results(
    preds: Sequence[Prediction], image_ids: Sequence[int], category_ids: Sequence[int] | None = None
) -> list[dict]:
    """Predictions as COCO results: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].

    Args:
        preds: per image (boxes (M, 4) xyxy pixels, scores (M,), class_ids (M,)).
        image_ids: COCO image id of each image (len(preds)).
        category_ids: COCO category id of each class index (default: class index + 1;
            use `COCO80_TO_COCO91` for the official COCO ids).
    """
    if len(image_ids) != len(preds):
        raise ValueError(f"{len(preds)} prediction images but {len(image_ids)} image ids")
    out = []
    for image_id, p in zip(image_ids, preds):
        boxes = _np(p[0], np.float64).reshape(-1, 4)
        scores = _np(p[1], np.float64).reshape(-1)
        classes = _np(p[2], np.int64).reshape(-1)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # (M, 4) COCO xywh
        for b, s, c in zip(xywh.tolist(), scores.tolist(), classes.tolist()):
            cat = int(category_ids[c]) if category_ids is not None else int(c) + 1
            out.append({"image_id": int(image_id), "category_id": cat, "bbox": b, "score": s})
    return out


def write_coco_json(
    preds: Sequence[Prediction],
    image_ids: Sequence[int],
    path: str | os.PathLike,
    category_ids: Sequence[int] | None = None,
) -> Path:
    """Write `coco_results(preds, image_ids, category_ids)` to `path` (pycocotools' loadRes
    reads it). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco_results(preds, image_ids, category_ids)))
    return path


def coco_ground_truth(
    gts: Sequence[GroundTruth],
    names: Sequence[str],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    image_sizes: Sequence[tuple[int, int]] | None = None,
) -> dict:
    """Ground truth as a COCO dataset dict (crowd-free, area = box area).

    Args:
        gts: per image (boxes (N, 4) xyxy pixels, class_ids (N,)).
        image_sizes: per image (height, width); 0 when unknown (COCOeval does not use them).
    """
    images = []
    annotations: list[dict[str, Any]] = []
    for i, (image_id, g) in enumerate(zip(image_ids, gts)):
        h, w = image_sizes[i] if image_sizes is not None else (0, 0)
        images.append({"id": int(image_id), "height": int(h), "width": int(w)})
        boxes = _np(g[0], np.float64).reshape(-1, 4)
        classes = _np(g[1], np.int64).reshape(-1)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # (N, 4) COCO xywh
        for b, c in zip(xywh.tolist(), classes.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(image_id),
                    "category_id": int(category_ids[c]),
                    "bbox": b,
                    "area": b[2] * b[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": int(cid), "name": str(n)} for cid, n in zip(category_ids, names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _run_cocoeval(gt: dict | str | Path, image_ids: list[int], category_ids: list[int], results: list[dict]):
    """COCOeval (bbox) of `results` on images `image_ids`, against an in-memory dataset dict
    or a COCO annotation file; returns the evaluator."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        if isinstance(gt, dict):
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
        else:
            coco_gt = COCO(str(gt))
    missing = set(image_ids) - set(coco_gt.getImgIds())
    if missing:
        raise ValueError(f"{gt if not isinstance(gt, dict) else 'ground truth'}: no image id(s) {sorted(missing)[:5]}")
    unknown = set(category_ids) - set(coco_gt.getCatIds())
    if unknown:
        raise ValueError(
            f"{gt if not isinstance(gt, dict) else 'ground truth'}: no category id(s) {sorted(unknown)[:5]}"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes rejects an empty list
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset["images"]),
                "annotations": [],
                "categories": list(coco_gt.dataset["categories"]),
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_evaluate(
    gts: Sequence[GroundTruth],
    preds: Sequence[Prediction],
    names: Sequence[str],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
    confusion_conf: float = 0.25,
    confusion_iou: float = 0.5,
    coco_gt_json: str | Path | None = None,
) -> Metrics:
    """All accuracy numbers of `preds` against `gts`.

    Args:
        gts: per image (boxes (N, 4) float xyxy pixels, class_ids (N,) int in [0, C)).
        preds: per image (boxes (M, 4) float xyxy pixels, scores (M,), class_ids (M,)).
        names: the C class names.
        image_sizes: per image (height, width), only stored in the COCO image records.
        image_ids, category_ids: COCO ids to use (default 1..len(gts) and 1..C); they only
            matter when the COCO objects are compared with files written elsewhere.
        confusion_conf, confusion_iou: thresholds of the confusion matrix and of P/R.
        coco_gt_json: score the COCO numbers against this COCO annotation file instead of
            `gts` (as the official evaluation does: crowd regions ignored, sizes from
            segment areas); `image_ids` / `category_ids` must then be the file's. The
            darknet-style mAP, the confusion matrix and the counts still use `gts`.
    Returns:
        Metrics; COCO numbers from pycocotools' COCOeval, -1 ("no ground truth") as NaN.
    """
    names = list(names)
    c = len(names)
    gts_n, preds_n = _normalise(gts, preds, c)
    image_ids = list(image_ids) if image_ids is not None else list(range(1, len(gts_n) + 1))
    category_ids = list(category_ids) if category_ids is not None else list(range(1, c + 1))
    if len(image_ids) != len(gts_n) or len(set(image_ids)) != len(image_ids):
        raise ValueError(f"need {len(gts_n)} distinct image ids, got {len(image_ids)}")
    if len(category_ids) != c or len(set(category_ids)) != c:
        raise ValueError(f"need {c} distinct category ids, got {len(category_ids)}")

    gt = (
        coco_gt_json
        if coco_gt_json is not None
        else coco_ground_truth(gts_n, names, image_ids, category_ids, image_sizes)
    )
    ev = _run_cocoeval(gt, image_ids, category_ids, coco_results(preds_n, image_ids, category_ids))
    stats: dict[str, Any] = {k: _nan_if_missing(v) for k, v in zip(COCO_STATS, ev.stats)}

    # precision: [T iou thresholds, R recall points, K categories (sorted ids), A areas, M maxDets]
    precision = ev.eval["precision"]
    order = {cid: k for k, cid in enumerate(ev.params.catIds)}
    ap = np.full(c, np.nan)
    ap50 = np.full(c, np.nan)
    curves = np.full((c, len(ev.params.recThrs)), np.nan)
    for cls, cid in enumerate(category_ids):
        p = precision[:, :, order[cid], 0, -1]  # (T, R) area all, maxDets 100
        if (p > -1).any():
            ap[cls] = p[p > -1].mean()
            p50 = p[0]
            ap50[cls] = p50[p50 > -1].mean() if (p50 > -1).any() else np.nan
            curves[cls] = np.where(p50 > -1, p50, np.nan)

    matches = voc_match(gts_n, preds_n, c)
    dn101 = _voc_ap_from_matches(matches, points=101)
    dn11 = _voc_ap_from_matches(matches, points=11)
    num_gt = np.bincount(np.concatenate([g[1] for g in gts_n] + [np.zeros(0, np.int64)]), minlength=c)
    images_per_class = np.zeros(c, dtype=np.int64)
    for _, gc in gts_n:
        images_per_class[np.unique(gc)] += 1
    return Metrics(
        names=names,
        **stats,
        ap_per_class=ap,
        ap50_per_class=ap50,
        darknet_map50_101=_nanmean(dn101),
        darknet_map50_11=_nanmean(dn11),
        darknet_ap50_per_class_101=dn101,
        darknet_ap50_per_class_11=dn11,
        recall_thresholds=np.asarray(ev.params.recThrs, dtype=np.float64),
        precision_curves=curves,
        confusion=confusion_matrix(gts_n, preds_n, c, conf=confusion_conf, iou=confusion_iou),
        confusion_conf=float(confusion_conf),
        confusion_iou=float(confusion_iou),
        num_gt=num_gt.astype(np.int64),
        num_images_per_class=images_per_class,
        num_images=len(gts_n),
        num_predictions=int(sum(len(p[1]) for p in preds_n)),
        coco_gt_source=str(coco_gt_json) if coco_gt_json is not None else "",
    )


def _nan_if_missing(v: float) -> float:
    return math.nan if v == -1 else float(v)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x[~np.isnan(x)].mean()) if (~np.isnan(x)).any() else math.nan


# ---------------------------------------------------------------- darknet-style VOC mAP
def voc_match(
    gts: Sequence[GroundTruth], preds: Sequence[Prediction], num_classes: int, iou_thresh: float = 0.5
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Darknet/VOC matching of every class's detections.

    In each image, detections of a class are taken by descending score; each is matched to
    the ground truth of that class with the highest IoU; it is a true positive when that
    IoU > `iou_thresh` (darknet's strict test) and the ground truth is not taken yet,
    otherwise a false positive.

    Returns:
        per class: scores (D,) float64 sorted descending (stable: image order, then input
        order), tp (D,) bool aligned with scores, and the number of ground-truth boxes.
    """
    scores_c: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    tp_c: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, dtype=np.int64)
    for g, p in zip(gts, preds):
        gb, gc = _np(g[0], np.float64).reshape(-1, 4), _np(g[1], np.int64).reshape(-1)
        pb, ps, pc = (
            _np(p[0], np.float64).reshape(-1, 4),
            _np(p[1], np.float64).reshape(-1),
            _np(p[2], np.int64).reshape(-1),
        )
        num_gt += np.bincount(gc, minlength=num_classes)[:num_classes]
        for c in np.unique(pc):
            keep = pc == c
            boxes, scores = pb[keep], ps[keep]
            order = np.argsort(-scores, kind="stable")
            boxes, scores = boxes[order], scores[order]
            gboxes = gb[gc == c]
            tp = np.zeros(len(scores), dtype=bool)
            if len(gboxes):
                iou = box_iou_np(boxes, gboxes)  # (D_i, G_i)
                best = iou.argmax(axis=1)
                best_iou = iou[np.arange(len(boxes)), best]
                taken = np.zeros(len(gboxes), dtype=bool)
                for d in np.nonzero(best_iou > iou_thresh)[0]:
                    if not taken[best[d]]:
                        taken[best[d]] = True
                        tp[d] = True
            scores_c[c].append(scores)
            tp_c[c].append(tp)
    out = []
    for c in range(num_classes):
        if not scores_c[c]:
            out.append((np.zeros(0), np.zeros(0, dtype=bool), int(num_gt[c])))
            continue
        scores = np.concatenate(scores_c[c])
        tp = np.concatenate(tp_c[c])
        order = np.argsort(-scores, kind="stable")
        out.append((scores[order], tp[order], int(num_gt[c])))
    return out


def interpolated_ap(recall: np.ndarray, precision: np.ndarray, points: int) -> float:
    """Darknet's `points`-point interpolated AP (101: COCO-style, 11: VOC2007).

    At each recall level r = i / (points - 1) take the highest precision among ranks with
    recall >= r (0 when none) and average them.

    Args:
        recall: (D,) non-decreasing recall after each ranked detection.
        precision: (D,) precision after each ranked detection.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if len(recall) == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # (D,) max precision at rank >= d
    levels = np.arange(points, dtype=np.float64) / (points - 1)  # as darknet: point * 1.0 / (points - 1)
    idx = np.searchsorted(recall, levels, side="left")  # first rank with recall >= level
    values = np.where(idx < len(recall), envelope[np.minimum(idx, len(recall) - 1)], 0.0)
    return float(values.mean())


def darknet_voc_ap(
    gts: Sequence[GroundTruth],
    preds: Sequence[Prediction],
    num_classes: int,
    iou_thresh: float = 0.5,
    points: int = 101,
) -> np.ndarray:
    """Darknet-style VOC AP per class (see the module docstring for how it differs from COCO).

    Args:
        gts: per image (boxes (N, 4) xyxy, class_ids (N,)).
        preds: per image (boxes (M, 4) xyxy, scores (M,), class_ids (M,)); all are used.
        points: 101 (darknet `-points 101`, COCO-like) or 11 (VOC2007).
    Returns:
        (num_classes,) float64 AP; NaN for classes without ground truth.
    """
    return _voc_ap_from_matches(voc_match(gts, preds, num_classes, iou_thresh), points)


def paired_bootstrap(
    gts: Sequence[GroundTruth],
    preds_a: Sequence[Prediction],
    preds_b: Sequence[Prediction],
    num_classes: int,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """How sure a difference in mAP50 between two detectors on the same images is: the paired
    bootstrap over images (each resample draws len(gts) images with replacement and scores both
    detectors on that same draw), with darknet-style VOC mAP@0.5 (`darknet_voc_ap`, 101 points).

    Args:
        gts: per image (boxes (N, 4) xyxy, class_ids (N,)).
        preds_a, preds_b: the two detectors' predictions on the same images, per image.
    Returns:
        (mAP50(b) - mAP50(a) on all images, the lower and upper ends of the central `level`
        interval of that difference over the resamples).
    """
    if not len(gts) == len(preds_a) == len(preds_b) or not gts:
        raise ValueError(f"paired_bootstrap needs the same images for both: {len(gts)}, {len(preds_a)}, {len(preds_b)}")
    per_image = [  # matching is per image: match once, then each resample only re-ranks
        [voc_match([g], [p], num_classes) for g, p in zip(gts, preds)] for preds in (preds_a, preds_b)
    ]

    def map50(matches: list[list[tuple[np.ndarray, np.ndarray, int]]], take: np.ndarray) -> float:
        merged = []
        for c in range(num_classes):
            scores = np.concatenate([matches[i][c][0] for i in take])
            tp = np.concatenate([matches[i][c][1] for i in take])
            order = np.argsort(-scores, kind="stable")
            merged.append((scores[order], tp[order], sum(matches[i][c][2] for i in take)))
        return _nanmean(_voc_ap_from_matches(merged, 101))

    everything = np.arange(len(gts))
    delta = map50(per_image[1], everything) - map50(per_image[0], everything)
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for k in range(resamples):
        take = rng.integers(0, len(gts), len(gts))
        draws[k] = map50(per_image[1], take) - map50(per_image[0], take)
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return float(delta), float(lo), float(hi)


def _voc_ap_from_matches(matches: list[tuple[np.ndarray, np.ndarray, int]], points: int) -> np.ndarray:
    out = np.full(len(matches), np.nan)
    for c, (_, tp, num_gt) in enumerate(matches):
        if num_gt == 0:
            continue
        ctp = np.cumsum(tp)  # (D,)
        cfp = np.cumsum(~tp)
        out[c] = interpolated_ap(ctp / num_gt, ctp / np.maximum(ctp + cfp, 1), points)
    return out


# ---------------------------------------------------------------- confusion matrix
def confusion_matrix(
    gts: Sequence[GroundTruth],
    preds: Sequence[Prediction],
    num_classes: int,
    conf: float = 0.25,
    iou: float = 0.5,
) -> np.ndarray:
    """Class confusion of confident detections.

    Per image, detections with score >= `conf` are matched to ground truth regardless of
    class, greedily by descending IoU (each box used once, IoU >= `iou`).

    Returns:
        (C+1, C+1) int64 counts indexed [true class, predicted class]. Row C (true
        background) counts unmatched detections (false positives); column C (predicted
        background) counts unmatched ground truth (misses).
    """
    c = num_classes
    m = np.zeros((c + 1, c + 1), dtype=np.int64)
    for g, p in zip(gts, preds):
        gb, gc = _np(g[0], np.float64).reshape(-1, 4), _np(g[1], np.int64).reshape(-1)
        pb, ps, pc = (
            _np(p[0], np.float64).reshape(-1, 4),
            _np(p[1], np.float64).reshape(-1),
            _np(p[2], np.int64).reshape(-1),
        )
        keep = ps >= conf
        pb, pc = pb[keep], pc[keep]
        g_used = np.zeros(len(gb), dtype=bool)
        p_used = np.zeros(len(pb), dtype=bool)
        if len(gb) and len(pb):
            ious = box_iou_np(gb, pb)  # (G, P)
            gi, pi = np.nonzero(ious >= iou)
            order = np.argsort(-ious[gi, pi], kind="stable")
            for a, b in zip(gi[order], pi[order]):
                if not g_used[a] and not p_used[b]:
                    g_used[a] = p_used[b] = True
                    m[gc[a], pc[b]] += 1
        m[:, c] += np.bincount(gc[~g_used], minlength=c + 1)  # missed truths: predicted background
        m[c, :] += np.bincount(pc[~p_used], minlength=c + 1)  # unmatched predictions: true background
    return m
