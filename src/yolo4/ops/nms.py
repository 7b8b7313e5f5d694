"""Confidence filtering and non-maximum suppression of decoded detections.

Two steps, each with one function per variant, chosen through a small dict:

    candidates:  CANDIDATES = {"best": select_best_class, "all": select_all_classes}
    suppression: get_nms(name, beta) from {"greedy", "agnostic", "diou"}

`postprocess` chains them per image. Everything runs on the input tensors' device.

"best" is OpenCV's darknet post-processing (its `object_detection` sample, which the
reference table in shared/reference/README.md follows): one label per box, the class with
the highest obj * cls, kept when that score > conf. "all" is darknet's own
`get_yolo_detections`: every (box, class) pair with obj * cls > conf, so one box can carry
two labels (dog 0.65 and cat 0.57 on the same animal).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torchvision
from torch import Tensor

from yolo4.ops.boxes import diou_nms_matrix

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


def diou_nms(
    boxes: Tensor,
    scores: Tensor,
    class_ids: Tensor,
    iou_threshold: float,
    beta: float = 0.6,
    max_candidates: int = 4096,
) -> Tensor:
    """Class-aware DIoU-NMS (Zheng et al., AAAI 2020; darknet `nms_kind=diounms`): box j is
    dropped when a higher-scoring kept box i of the same class has
    IoU(i, j) - (d^2/c^2)^beta > iou_threshold (see `diou_nms_matrix`).

    Vectorised as Cluster-NMS (Zheng et al., 2021): with S[i, j] = "i outranks and
    suppresses j", iterate keep <- not any_i(keep[i] & S[i, j]) from keep = all. After
    t rounds the first t boxes (by score) are final, so it reaches greedy NMS's exact
    answer, usually in a handful of rounds. Only the `max_candidates` highest-scoring boxes
    enter (the matrix is K x K); the rest are dropped.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. class_ids: Tensor[K] int.
    Returns:
        Tensor[M] int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)[:max_candidates]  # (K',)
    b, c = boxes[order], class_ids[order]
    same_class = c[:, None] == c[None, :]  # (K', K')
    suppresses = ((diou_nms_matrix(b, b, beta) > iou_threshold) & same_class).triu(diagonal=1)
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for _ in range(len(order)):
        new_keep = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
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


NMS_NAMES = ("greedy", "agnostic", "diou")


# ------------------------------------------------------------------ both steps
def postprocess(
    boxes: Tensor,
    objectness: Tensor,
    class_probs: Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    nms: str = "greedy",
    max_det: int = 300,
    labels: str = "best",
    beta: float = 0.6,
) -> list[Candidates]:
    """Confidence filter + NMS + max-detections cap, image by image.

    Args:
        boxes: Tensor[B, N, 4] xyxy. objectness: Tensor[B, N]. class_probs: Tensor[B, N, C]
            (the output of `yolo4.ops.boxes.decode_heads`).
        conf: keep scores obj * cls > conf. iou: NMS threshold.
        nms: "greedy" (class-aware), "agnostic" or "diou" (class-aware DIoU-NMS with `beta`).
        max_det: at most this many detections per image (the highest scores).
        labels: "best" (one class per box, OpenCV) or "all" (every class > conf, darknet).
    Returns:
        B Candidates, each with M <= max_det rows sorted by decreasing score.
    """
    if labels not in CANDIDATES:
        raise ValueError(f"unknown labels rule '{labels}' (choose from {', '.join(CANDIDATES)})")
    select, suppress = CANDIDATES[labels], get_nms(nms, beta)
    out = []
    for i in range(boxes.shape[0]):
        cand = select(boxes[i], objectness[i], class_probs[i], conf)
        keep = suppress(cand.boxes, cand.scores, cand.class_ids, iou)[:max_det]
        out.append(Candidates(cand.boxes[keep], cand.scores[keep], cand.class_ids[keep]))
    return out
