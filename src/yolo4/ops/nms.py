"""Confidence filtering and non-maximum suppression of decoded detections.

Two steps, each with one function per variant, chosen through a small dict:

    candidates:  CANDIDATES = {"best": select_best_class, "all": select_all_classes}
    suppression: get_nms(name, beta) from {"greedy", "agnostic", "diou"}

`postprocess` chains them per image (`batched_postprocess`: the same result with one NMS
call for many images, what the GPU fast path uses), with its settings in one frozen `PostprocessConfig`
(`yolo4.ops.nms_config`, re-exported here; presets DETECT_POSTPROCESS and VAL_POSTPROCESS).
Everything runs on the input tensors' device.

"best" is OpenCV's darknet post-processing (its `object_detection` sample, which the
reference table in shared/reference/README.md follows): one label per box, the class with
the highest obj * cls, kept when that score > conf. "all" is darknet's own
`get_yolo_detections`: every (box, class) pair with obj * cls > conf, so one box can carry
two labels (dog 0.65 and cat 0.57 on the same animal).

"greedy" is plain-IoU greedy NMS per class: OpenCV's `NMSBoxes` and darknet's `do_nms_sort`
(used when a cfg has no `nms_kind`). Note that darknet's `nms_kind=greedynms` (yolov4.cfg)
actually runs `diounms_sort` with plain DIoU, i.e. `get_nms("diou", beta=1.0)`; and
`nms_kind=diounms` (yolov4-csp.cfg) is `get_nms("diou", beta=beta_nms)`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torchvision
from torch import Tensor

from yolo4.ops.boxes import diou_nms_matrix
from yolo4.ops.nms_config import DETECT_POSTPROCESS, LABEL_RULES, NMS_KINDS, VAL_POSTPROCESS, PostprocessConfig

__all__ = [
    "CANDIDATES",
    "DETECT_POSTPROCESS",
    "LABEL_RULES",
    "NMS_KINDS",
    "VAL_POSTPROCESS",
    "Candidates",
    "PostprocessConfig",
    "agnostic_nms",
    "batched_postprocess",
    "diou_nms",
    "get_nms",
    "greedy_nms",
    "postprocess",
    "select_all_classes",
    "select_best_class",
]

NmsFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]


class Candidates(NamedTuple):
    """Detections of one image. boxes Tensor[K, 4] xyxy, scores Tensor[K], class_ids Tensor[K] int64."""

    boxes: Tensor
    scores: Tensor
    class_ids: Tensor


# ------------------------------------------------------------------ candidates
def select_best_class(boxes: Tensor, objectness: Tensor, class_probs: Tensor, conf: float) -> Candidates:
    """One label per box: the class with the largest obj * cls, kept if that score > conf.

    Args:
        boxes: Tensor[N, 4] xyxy. objectness: Tensor[N]. class_probs: Tensor[N, C].
    Returns:
        Candidates with K <= N rows, in input order.
    """
    scores, class_ids = (objectness[:, None] * class_probs).max(dim=1)  # (N,), (N,)
    keep = scores > conf
    return Candidates(boxes[keep], scores[keep], class_ids[keep])


def select_all_classes(boxes: Tensor, objectness: Tensor, class_probs: Tensor, conf: float) -> Candidates:
    """Every (box, class) pair with obj * cls > conf (darknet's own rule); a box may repeat.

    Args:
        boxes: Tensor[N, 4] xyxy. objectness: Tensor[N]. class_probs: Tensor[N, C].
    Returns:
        Candidates with K <= N*C rows, ordered by box then class.
    """
    scores = objectness[:, None] * class_probs  # (N, C)
    box_idx, class_ids = torch.nonzero(scores > conf, as_tuple=True)
    return Candidates(boxes[box_idx], scores[box_idx, class_ids], class_ids)


CANDIDATES: dict[str, Callable[[Tensor, Tensor, Tensor, float], Candidates]] = {
    "best": select_best_class,
    "all": select_all_classes,
}


# ------------------------------------------------------------------ suppression
def greedy_nms(boxes: Tensor, scores: Tensor, class_ids: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware greedy NMS (torchvision's `batched_nms`): a box is dropped when a
    higher-scoring box of the same class overlaps it with IoU > iou_threshold.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. class_ids: Tensor[K] int.
    Returns:
        Tensor[M] int64 indices of the kept boxes, by decreasing score.
    """
    return torchvision.ops.batched_nms(boxes, scores, class_ids, iou_threshold)


def agnostic_nms(boxes: Tensor, scores: Tensor, class_ids: Tensor, iou_threshold: float) -> Tensor:
    """Class-agnostic greedy NMS (torchvision's `nms`): boxes of any class suppress each other.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. class_ids: Tensor[K] (ignored).
    Returns:
        Tensor[M] int64 indices of the kept boxes, by decreasing score.
    """
    return torchvision.ops.nms(boxes, scores, iou_threshold)


def _cluster_diou_nms(boxes: Tensor, iou_threshold: float, beta: float, block: int) -> Tensor:
    """DIoU-NMS of boxes already sorted by decreasing score, one class. Returns a bool
    keep mask Tensor[K].

    Blocks of `block` boxes in rank order: a block's boxes first meet every box kept from
    earlier blocks (all final), then each other through the Cluster-NMS fixed point
    keep[j] = alive[j] and not any_{i<j}(keep[i] and S[i, j]), iterated from keep = alive:
    after t rounds the first t boxes are final, so it is exactly the greedy answer
    (usually after 2-3 rounds). Memory stays O(block * kept).
    """
    n = boxes.shape[0]
    keep = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    kept = boxes[:0]
    for start in range(0, n, block):
        blk = boxes[start : start + block]  # (k, 4)
        alive = torch.ones(blk.shape[0], dtype=torch.bool, device=boxes.device)
        for i in range(0, kept.shape[0], block):
            alive &= ~(diou_nms_matrix(kept[i : i + block], blk, beta) > iou_threshold).any(dim=0)
        rank = torch.arange(blk.shape[0], device=boxes.device)
        outranks = rank[:, None] < rank[None, :]  # (k, k); cheaper than a bool triu on CPU
        suppresses = (diou_nms_matrix(blk, blk, beta) > iou_threshold) & outranks  # i outranks and suppresses j
        k_keep = alive
        for _ in range(blk.shape[0]):
            new_keep = alive & ~(suppresses & k_keep[:, None]).any(dim=0)
            if torch.equal(new_keep, k_keep):
                break
            k_keep = new_keep
        keep[start : start + blk.shape[0]] = k_keep
        kept = torch.cat([kept, blk[k_keep]])
    return keep


def diou_nms(
    boxes: Tensor,
    scores: Tensor,
    class_ids: Tensor,
    iou_threshold: float,
    beta: float = 0.6,
    block: int = 2048,
) -> Tensor:
    """Class-aware DIoU-NMS (Zheng et al., AAAI 2020; darknet `nms_kind=diounms`): box j is
    dropped when a higher-scoring kept box i of the same class has
    IoU(i, j) - (d^2/c^2)^beta > iou_threshold (see `yolo4.ops.boxes.diou_nms_matrix`).

    Exact greedy result, vectorised per class as blockwise Cluster-NMS (Zheng et al., 2021;
    see `_cluster_diou_nms`); the Python loops run over classes and blocks, not boxes.
    Not traceable into ONNX (data-dependent loops): exported graphs use `greedy_nms`.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. class_ids: Tensor[K] int.
    Returns:
        Tensor[M] int64 indices of the kept boxes, by decreasing score.
    """
    order = scores.argsort(descending=True, stable=True)  # (K,)
    keep = torch.zeros(order.shape[0], dtype=torch.bool, device=boxes.device)
    sorted_ids = class_ids[order]
    for c in torch.unique(sorted_ids).tolist():
        members = torch.nonzero(sorted_ids == c).squeeze(1)  # ranks of class c, increasing
        keep[members] = _cluster_diou_nms(boxes[order[members]], iou_threshold, beta, block)
    return order[keep]


def get_nms(name: str, beta: float = 0.6) -> NmsFn:
    """The suppression function called `name`: "greedy", "agnostic" or "diou" (with `beta`)."""
    table: dict[str, NmsFn] = {
        "greedy": greedy_nms,
        "agnostic": agnostic_nms,
        "diou": partial(diou_nms, beta=beta),
    }
    if name not in table:
        raise ValueError(f"unknown NMS '{name}' (choose from {', '.join(table)})")
    return table[name]


# ------------------------------------------------------------------ both steps
def postprocess(
    boxes: Tensor,
    objectness: Tensor,
    class_probs: Tensor,
    config: PostprocessConfig = DETECT_POSTPROCESS,
    beta: float = 0.6,
) -> list[Candidates]:
    """Confidence filter + NMS + max-detections cap, image by image.

    Args:
        boxes: Tensor[B, N, 4] xyxy. objectness: Tensor[B, N]. class_probs: Tensor[B, N, C]
            (the output of `yolo4.ops.boxes.decode_heads`).
        config: thresholds, NMS kind, labels rule and caps (see `PostprocessConfig`).
        beta: DIoU-NMS exponent (the cfg's `beta_nms`; used only by nms="diou").
    Returns:
        B Candidates, each with M <= config.max_det rows sorted by decreasing score.
    """
    select, suppress = CANDIDATES[config.labels], get_nms(config.nms, beta)
    out = []
    for i in range(boxes.shape[0]):
        cand = select(boxes[i], objectness[i], class_probs[i], config.conf)
        if cand.scores.shape[0] > config.max_nms:
            top = cand.scores.topk(config.max_nms).indices
            cand = Candidates(cand.boxes[top], cand.scores[top], cand.class_ids[top])
        keep = suppress(cand.boxes, cand.scores, cand.class_ids, config.iou)[: config.max_det]
        out.append(Candidates(cand.boxes[keep], cand.scores[keep], cand.class_ids[keep]))
    return out


def _grouped_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within each group, in one `torchvision.ops.nms` call: each group's boxes are
    shifted by group * (coordinate span + 1), so boxes of different groups never overlap. The
    shift is done in float64 (float32 would round boxes shifted by millions of pixels to a
    quarter pixel), and the span covers negative coordinates, which torchvision's `batched_nms`
    shift does not.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. groups: Tensor[K] int64 (image * C + class, or image).
    Returns:
        Tensor[M] int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    b = boxes.double()
    span = b.max() - b.min() + 1  # (a tensor: no host synchronisation)
    shifted = b + (groups.double() * span)[:, None]  # (K, 4)
    return torchvision.ops.nms(shifted, scores.double(), iou_threshold)


def batched_postprocess(
    boxes: Tensor,
    objectness: Tensor,
    class_probs: Tensor,
    config: PostprocessConfig = DETECT_POSTPROCESS,
    beta: float = 0.6,
    max_boxes: int = 32768,
) -> list[Candidates]:
    """`postprocess` for a whole batch at once: the confidence filter and the `max_nms` cap
    vectorised over the batch, then one greedy NMS call per group of consecutive images holding
    at most `max_boxes` candidates together (NMS's memory grows with the square of its input,
    so one image of 30,000 candidates is one call and 32 images of 500 are one call too).
    The same detections as `postprocess` (greedy and agnostic NMS; "diou" runs `postprocess`).

    Args:
        boxes: Tensor[B, N, 4] xyxy. objectness: Tensor[B, N]. class_probs: Tensor[B, N, C].
    Returns:
        B Candidates, each with M <= config.max_det rows sorted by decreasing score.
    """
    if config.nms == "diou":
        return postprocess(boxes, objectness, class_probs, config, beta)
    b_count, _, c_count = class_probs.shape
    if config.labels == "best":
        scores, best = (objectness[..., None] * class_probs).max(dim=2)  # (B, N)
        img, box = torch.nonzero(scores > config.conf, as_tuple=True)  # (K,), (K,)
        score, cls = scores[img, box], best[img, box]
    else:
        all_scores = objectness[..., None] * class_probs  # (B, N, C)
        img, box, cls = torch.nonzero(all_scores > config.conf, as_tuple=True)
        score = all_scores[img, box, cls]
    # by image, then by decreasing score; a rank within its image for the max_nms cap
    order = score.argsort(descending=True, stable=True)
    order = order[img[order].argsort(stable=True)]
    img, box, score, cls = img[order], box[order], score[order], cls[order]
    counts = torch.bincount(img, minlength=b_count)  # (B,)
    cap = torch.arange(img.shape[0], device=img.device) - (counts.cumsum(0) - counts)[img] < config.max_nms
    img, box, score, cls = img[cap], box[cap], score[cap], cls[cap]
    cand = boxes[img, box]  # (K, 4)
    groups = img * c_count + cls if config.nms == "greedy" else img
    # one NMS call per run of consecutive images with <= max_boxes candidates together
    bounds, start, end = [], 0, 0
    for n in counts.clamp(max=config.max_nms).tolist():  # (the host synchronisation before NMS)
        if end > start and end - start + n > max_boxes:
            bounds.append((start, end))
            start = end
        end += n
    bounds.append((start, end))
    kept_parts = [a + _grouped_nms(cand[a:z], score[a:z], groups[a:z], config.iou) for a, z in bounds]
    kept = torch.cat(kept_parts)
    kept = kept[img[kept].argsort(stable=True)]  # by image, still by decreasing score within each
    k_img = img[kept]
    k_counts = torch.bincount(k_img, minlength=b_count)
    k_rank = torch.arange(kept.shape[0], device=kept.device) - (k_counts.cumsum(0) - k_counts)[k_img]
    kept = kept[k_rank < config.max_det]
    per_image = torch.bincount(img[kept], minlength=b_count).tolist()
    out_boxes, out_scores, out_cls = cand[kept], score[kept], cls[kept]
    return [
        Candidates(bx, sc, cl)
        for bx, sc, cl in zip(out_boxes.split(per_image), out_scores.split(per_image), out_cls.split(per_image))
    ]
