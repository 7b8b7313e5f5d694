"""yolo4.evaluation.tracking: CLEAR MOT on hand-made sequences."""

from __future__ import annotations

import numpy as np
import pytest

from yolo4.evaluation.tracking import clear_mot


def _f(ids, boxes):
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


A0, B0 = [0, 0, 10, 10], [50, 50, 60, 60]


def test_perfect_tracking():
    gt = [_f([1, 2], [A0, B0])] * 4
    m = clear_mot(gt, [_f([7, 9], [A0, B0])] * 4)
    assert (m.mota, m.motp, m.id_switches, m.false_positives, m.misses) == (1.0, 1.0, 0, 0, 0)
    assert (m.gt, m.matches, m.gt_ids, m.track_ids, m.mostly_tracked, m.frames) == (8, 8, 2, 2, 2, 4)


def test_hand_counted_switch_miss_and_false_positive():
    gt = [_f([1, 2], [A0, B0])] * 4
    tracks = [
        _f([7, 9], [A0, B0]),
        _f([7], [A0]),  # object 2 missed
        _f([7, 8], [A0, B0]),  # object 2 now carries id 8: one switch
        _f([7, 8, 5], [A0, B0, [100, 100, 110, 110]]),  # one false positive
    ]
    m = clear_mot(gt, tracks)
    assert (m.misses, m.id_switches, m.false_positives, m.matches) == (1, 1, 1, 7)
    assert m.mota == pytest.approx(1 - 3 / 8)
    assert m.mostly_tracked == 1  # object 2 matched in 3 of 4 frames (< 80 %)


def test_kept_correspondence_wins_over_a_better_overlap():
    """Last frame's match is kept while its IoU stays >= 0.5, even if another track fits better."""
    gt = [_f([1], [A0]), _f([1], [A0])]
    tracks = [_f([7], [A0]), _f([7, 8], [[0, 0, 10, 14], A0])]  # id 7 IoU 0.71, id 8 IoU 1.0
    m = clear_mot(gt, tracks)
    assert (m.id_switches, m.false_positives) == (0, 1)
    assert m.motp == pytest.approx((1.0 + 100 / 140) / 2)


def test_low_overlap_is_no_match_and_lengths_must_agree():
    m = clear_mot([_f([1], [A0])], [_f([3], [[5, 5, 15, 15]])])  # IoU 25/175
    assert (m.matches, m.misses, m.false_positives) == (0, 1, 1)
    assert clear_mot([_f([], [])], [_f([], [])]).mota == 1.0
    with pytest.raises(ValueError):
        clear_mot([_f([1], [A0])], [])
