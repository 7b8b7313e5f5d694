"""CLEAR MOT metrics of a tracker's output against ground-truth identities (Bernardin and
Stiefelhagen, 2008; the rules of py-motmetrics and the MOTChallenge devkit):

    m = clear_mot(gt_frames, track_frames)     # per frame: (ids (N,), boxes (N, 4) xyxy)
    m.mota, m.id_switches, m.motp

Per frame, a ground-truth object keeps the track it was matched to in the previous frame
while their IoU stays >= `iou_threshold`; the others are matched by the Hungarian algorithm
on 1 - IoU among pairs with IoU >= the threshold. A ground-truth object matched to a
different track id than at its last match counts one identity switch. Unmatched tracks are
false positives, unmatched objects misses, and

    MOTA = 1 - (misses + false positives + identity switches) / ground-truth boxes
    MOTP = mean IoU of the matched pairs
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision

Frame = tuple[np.ndarray, np.ndarray]  # ids (N,) int, boxes (N, 4) xyxy


@dataclass(frozen=True)
class MotMetrics:
    """CLEAR MOT counts and scores over a whole sequence (see the module docstring).

    frames; gt: ground-truth boxes; matches; misses (FN); false_positives (FP); id_switches
    (IDSW); mota; motp (mean IoU of matches); gt_ids / track_ids: distinct identities;
    mostly_tracked: objects matched in >= 80 % of the frames they appear in.
    """

    frames: int
    gt: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    mota: float
    motp: float
    gt_ids: int
    track_ids: int
    mostly_tracked: int

    def summary(self) -> str:
        return (
            f"MOTA {self.mota:.3f}, MOTP {self.motp:.3f} (IoU), ID switches {self.id_switches}, "
            f"FP {self.false_positives}, FN {self.misses} of {self.gt} boxes, "
            f"{self.track_ids} track ids for {self.gt_ids} objects ({self.mostly_tracked} mostly tracked), "
            f"{self.frames} frames"
        )


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return torchvision.ops.box_iou(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    ).numpy()


def clear_mot(gt_frames: Sequence[Frame], track_frames: Sequence[Frame], iou_threshold: float = 0.5) -> MotMetrics:
    """CLEAR MOT of `track_frames` against `gt_frames` (the same number of frames, in order).

    Args:
        gt_frames / track_frames: per frame (ids int (N,), boxes float (N, 4) xyxy).
        iou_threshold: the least IoU of a match.
    Returns:
        MotMetrics.
    """
    from scipy.optimize import linear_sum_assignment

    if len(gt_frames) != len(track_frames):
        raise ValueError(f"{len(gt_frames)} ground-truth frames but {len(track_frames)} tracked frames")
    last_match: dict[int, int] = {}  # gt id -> track id at its last match
    current: dict[int, int] = {}  # gt id -> track id matched in the previous frame
    gt_n = matches = misses = fps = switches = 0
    iou_sum = 0.0
    seen_frames: dict[int, int] = {}
    matched_frames: dict[int, int] = {}
    track_ids: set[int] = set()
    for (g_raw, g_boxes), (t_raw, t_boxes) in zip(gt_frames, track_frames):
        g_ids: list[int] = np.asarray(g_raw).reshape(-1).tolist()
        t_ids: list[int] = np.asarray(t_raw).reshape(-1).tolist()
        iou = _iou(np.asarray(g_boxes, np.float64).reshape(-1, 4), np.asarray(t_boxes, np.float64).reshape(-1, 4))
        track_ids.update(t_ids)
        pairs: list[tuple[int, int]] = []
        t_col = {t: j for j, t in enumerate(t_ids)}
        for i, g in enumerate(g_ids):  # keep last frame's correspondences that still overlap
            j = t_col.get(current.get(g, -1))
            if j is not None and iou[i, j] >= iou_threshold:
                pairs.append((i, j))
        free_g = [i for i in range(len(g_ids)) if i not in {p[0] for p in pairs}]
        free_t = [j for j in range(len(t_ids)) if j not in {p[1] for p in pairs}]
        if free_g and free_t:
            sub = iou[np.ix_(free_g, free_t)]
            cost = np.where(sub >= iou_threshold, 1.0 - sub, 1e6)
            for r, c in zip(*linear_sum_assignment(cost)):
                if sub[r, c] >= iou_threshold:
                    pairs.append((free_g[r], free_t[c]))
        current = {}
        for i, j in pairs:
            g, t = g_ids[i], t_ids[j]
            if g in last_match and last_match[g] != t:
                switches += 1
            last_match[g] = current[g] = t
            iou_sum += iou[i, j]
            matched_frames[g] = matched_frames.get(g, 0) + 1
        for g in g_ids:
            seen_frames[g] = seen_frames.get(g, 0) + 1
        gt_n += len(g_ids)
        matches += len(pairs)
        misses += len(g_ids) - len(pairs)
        fps += len(t_ids) - len(pairs)
    return MotMetrics(
        frames=len(gt_frames),
        gt=gt_n,
        matches=matches,
        misses=misses,
        false_positives=fps,
        id_switches=switches,
        mota=1.0 - (misses + fps + switches) / max(gt_n, 1),
        motp=iou_sum / max(matches, 1),
        gt_ids=len(seen_frames),
        track_ids=len(track_ids),
        mostly_tracked=sum(matched_frames.get(g, 0) >= 0.8 * n for g, n in seen_frames.items()),
    )
