"""yolo4.inference.track: assignment, Kalman filter, ByteTrack ids across misses and low scores,
a synthetic video scored with CLEAR MOT, and the `yolo4 track` run."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from yolo4.data.shapes import ShapesVideoConfig, render_shapes_video
from yolo4.evaluation.tracking import clear_mot
from yolo4.inference.track import ByteTracker, KalmanBox, TrackConfig, linear_assignment, run_track

pytest.importorskip("scipy")


# ------------------------------------------------------------------ assignment
def _brute_force(cost: np.ndarray, limit: float) -> float:
    """The least total cost over every partial matching (pairs <= limit, limit / 2 per unmatched row or col)."""
    n, m = cost.shape
    best = (n + m) * limit / 2
    for k in range(1, min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                if all(cost[r, c] <= limit for r, c in zip(rows, cols)):
                    total = sum(cost[r, c] for r, c in zip(rows, cols)) + (n + m - 2 * k) * limit / 2
                    best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_linear_assignment_is_the_optimal_partial_matching(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(0, 4, 2)
    cost, limit = rng.random((n, m)), 0.6
    pairs, rows, cols = linear_assignment(cost, limit)
    assert sorted(rows + [r for r, _ in pairs]) == list(range(n))
    assert sorted(cols + [c for _, c in pairs]) == list(range(m))
    total = sum(cost[r, c] for r, c in pairs) + (len(rows) + len(cols)) * limit / 2
    assert total == pytest.approx(_brute_force(cost, limit))
    assert all(cost[r, c] <= limit for r, c in pairs)


# ------------------------------------------------------------------ Kalman filter
def test_kalman_learns_a_constant_velocity():
    box = np.array([10.0, 20.0, 30.0, 60.0])
    kf = KalmanBox(box)
    for t in range(1, 15):
        kf.predict()
        kf.update(box + t * np.array([3.0, 1.0, 3.0, 1.0]))
    kf.predict()
    assert np.abs(kf.box - (box + 15 * np.array([3.0, 1.0, 3.0, 1.0]))).max() < 0.5


# ------------------------------------------------------------------ ByteTrack
def _moving(t: int) -> np.ndarray:
    """Two boxes moving towards each other along separate rows."""
    return np.array([[10 + 4 * t, 10, 40 + 4 * t, 40], [200 - 4 * t, 80, 230 - 4 * t, 110]], np.float64)


def test_ids_survive_frames_without_detections_and_low_scores():
    tracker = ByteTracker(TrackConfig())
    ids = []
    for t in range(20):
        boxes, scores = _moving(t), np.array([0.9, 0.8])
        if t in (6, 7):  # the detector misses both objects for two frames
            boxes, scores = boxes[:0], scores[:0]
        if t == 12:  # a low-score detection (ByteTrack's second association keeps the track)
            scores = np.array([0.9, 0.3])
        tracks = tracker.update(boxes, scores, np.zeros(len(scores), np.int64))
        ids.append(tracks.ids.tolist())
    assert ids[0] == [1, 2]
    assert ids[6] == ids[7] == []  # lost tracks are not shown
    assert all(i == [1, 2] for k, i in enumerate(ids) if k not in (6, 7))
    # the tracked box follows the object
    assert np.abs(tracks.boxes - _moving(19)).max() < 2.0


def test_new_tracks_need_two_hits_after_the_first_frame_and_low_scores_start_nothing():
    tracker = ByteTracker(TrackConfig())
    tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    box = np.array([[50.0, 50, 80, 80]])
    assert len(tracker.update(box, np.array([0.9]), np.array([3]))) == 0  # tentative
    second = tracker.update(box + 2, np.array([0.9]), np.array([3]))
    assert second.ids.tolist() == [1] and second.class_ids.tolist() == [3]
    other = np.array([[150.0, 150, 180, 180]])
    for _ in range(3):  # below new_track_thresh: never a track
        out = tracker.update(np.concatenate([box + 4, other]), np.array([0.9, 0.55]), np.array([3, 3]))
    assert out.ids.tolist() == [1]


def test_lost_tracks_are_forgotten_after_the_buffer():
    tracker = ByteTracker(TrackConfig(track_buffer=3), frame_rate=30)
    box = np.array([[50.0, 50, 80, 80]])
    tracker.update(box, np.array([0.9]), np.array([0]))
    for _ in range(5):
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert tracker.tracks == []
    assert tracker.update(box, np.array([0.9]), np.array([0])).ids.tolist() == []  # a new, tentative track


def test_synthetic_video_with_a_perfect_detector_that_misses_frames():
    """Ground-truth boxes as detections, with every 10th frame dropped: identities are kept."""
    cfg = ShapesVideoConfig(num_frames=60, num_objects=5, img_size=256)
    tracker = ByteTracker(TrackConfig())
    gt, out = [], []
    for k, (_, boxes, classes, ids) in enumerate(render_shapes_video(cfg)):
        gt.append((ids, boxes))
        keep = np.ones(len(boxes), bool) if k % 10 != 5 else np.zeros(len(boxes), bool)
        tracks = tracker.update(boxes[keep], np.full(keep.sum(), 0.9), classes[keep])
        out.append((tracks.ids, tracks.boxes))
    m = clear_mot(gt, out)
    assert m.id_switches == 0 and m.false_positives == 0
    # misses: the first frames of each track plus the dropped frames only
    dropped = sum(len(g[0]) for k, g in enumerate(gt) if k % 10 == 5)
    assert m.misses == dropped
    assert m.track_ids == m.gt_ids


# ------------------------------------------------------------------ the run
def test_run_track_writes_video_mot_rows_and_json_lines(tiny_cfg, fake_runner, tmp_path):
    video = tmp_path / "walk.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for i in range(6):
        w.write(np.full((64, 64, 3), 20 * i, np.uint8))
    w.release()
    summary = run_track(
        video, model=tiny_cfg, runner=fake_runner, names=["a", "b"], out=tmp_path / "out", progress=False
    )
    assert summary.frames == 6 and summary.ids == 1
    rows = summary.mot.read_text().splitlines()
    assert len(rows) == 6  # the fixed box is one track from the first frame on
    frame, tid, left, top, width, height, score, *rest = rows[0].split(",")
    assert (frame, tid, rest) == ("1", "1", ["-1", "-1", "-1"])
    assert [float(v) for v in (left, top, width, height)] == pytest.approx([32, 8, 32, 16], abs=0.5)
    records = [json.loads(line) for line in summary.json.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(1, 7))
    assert records[-1]["tracks"][0]["id"] == 1 and records[-1]["tracks"][0]["class_name"] == "b"
    cap = cv2.VideoCapture(str(summary.video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
