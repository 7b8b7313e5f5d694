"""Multi-object tracking: persistent ids across video frames with ByteTrack, and the `yolo4
track` run over a video or camera.

    tracker = ByteTracker(TrackConfig(), frame_rate=30)
    for det in detections_per_frame:                     # Detections of consecutive frames
        tracks = tracker.update(det.boxes, det.scores, det.class_ids)
        tracks.ids, tracks.boxes                         # (M,), (M, 4) xyxy

ByteTrack (Zhang et al., ECCV 2022) associates every box, not only the confident ones: tracks
first meet the high-score detections (IoU fused with the score, Hungarian assignment), then
the tracks left over meet the low-score detections, which recovers occluded or blurred
objects instead of dropping them; tracks without a match are kept "lost" for `track_buffer`
frames (at 30 fps) with a constant-velocity Kalman filter predicting their box, so an object
that the detector misses for a few frames keeps its id. New tracks start from unmatched
high-score detections and are confirmed by a second hit (except on the first frame).

Written here (about 200 lines) on SciPy's `linear_sum_assignment`, rather than taken from a
package: supervision moved its ByteTrack to the `trackers` package, which requires
`opencv-python` (clashing with the headless OpenCV that yolo4 uses).
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from yolo4.errors import DataError, Yolo4Error
from yolo4.inference.speed import SpeedConfig
from yolo4.ops.nms_config import TRACK_POSTPROCESS, PostprocessConfig

# ================================================================== Kalman filter
_STD_POSITION, _STD_VELOCITY = 1.0 / 20, 1.0 / 160  # ByteTrack's noise weights, relative to box height
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # constant velocity, one frame per step
_H = np.eye(4, 8)


def box_to_cxcyah(box: np.ndarray) -> np.ndarray:
    """xyxy (4,) -> (centre x, centre y, aspect w/h, height)."""
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w / max(h, 1e-6), h], np.float64)


def cxcyah_to_box(m: np.ndarray) -> np.ndarray:
    """(centre x, centre y, aspect, height) -> xyxy (4,)."""
    w, h = m[2] * m[3], m[3]
    return np.array([m[0] - w / 2, m[1] - h / 2, m[0] + w / 2, m[1] + h / 2], np.float64)


class KalmanBox:
    """A constant-velocity Kalman filter of one box in (cx, cy, a, h) and their velocities."""

    def __init__(self, box: np.ndarray):
        z = box_to_cxcyah(box)
        self.mean = np.concatenate([z, np.zeros(4)])  # (8,)
        h = z[3]
        std = [2 * _STD_POSITION * h, 2 * _STD_POSITION * h, 1e-2, 2 * _STD_POSITION * h]
        std += [10 * _STD_VELOCITY * h, 10 * _STD_VELOCITY * h, 1e-5, 10 * _STD_VELOCITY * h]
        self.cov = np.diag(np.square(std))  # (8, 8)

    def predict(self, keep_height_velocity: bool = True) -> None:
        if not keep_height_velocity:
            self.mean[7] = 0.0
        h = self.mean[3]
        std = [_STD_POSITION * h, _STD_POSITION * h, 1e-2, _STD_POSITION * h]
        std += [_STD_VELOCITY * h, _STD_VELOCITY * h, 1e-5, _STD_VELOCITY * h]
        self.mean = _F @ self.mean
        self.cov = _F @ self.cov @ _F.T + np.diag(np.square(std))

    def update(self, box: np.ndarray) -> None:
        z = box_to_cxcyah(box)
        h = self.mean[3]
        r = np.diag(np.square([_STD_POSITION * h, _STD_POSITION * h, 1e-1, _STD_POSITION * h]))
        s = _H @ self.cov @ _H.T + r  # (4, 4)
        gain = np.linalg.solve(s, _H @ self.cov).T  # (8, 4) = cov H^T S^-1 (S and cov symmetric)
        self.mean = self.mean + gain @ (z - _H @ self.mean)
        self.cov = self.cov - gain @ s @ gain.T

    @property
    def box(self) -> np.ndarray:
        return cxcyah_to_box(self.mean[:4])


# ================================================================== assignment
def linear_assignment(cost: np.ndarray, limit: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost matching in which no pair may cost more than `limit`; leaving a row or a
    column unmatched costs limit / 2 (the rule of `lap.lapjv(..., cost_limit=limit)` that
    ByteTrack uses), solved exactly with SciPy on the (N + M) square extension.

    Args:
        cost: float (N, M).
    Returns:
        (matched (row, col) pairs, unmatched rows, unmatched cols).
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    from scipy.optimize import linear_sum_assignment

    big = 1e9
    ext = np.full((n + m, n + m), big)
    ext[:n, :m] = np.where(cost <= limit, cost, big)
    ext[:n, m:] = np.where(np.eye(n, dtype=bool), limit / 2, big)  # row i unmatched
    ext[n:, :m] = np.where(np.eye(m, dtype=bool), limit / 2, big)  # col j unmatched
    ext[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(ext)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if r < n and c < m and cost[r, c] <= limit]
    matched_r, matched_c = {r for r, _ in pairs}, {c for _, c in pairs}
    return pairs, [i for i in range(n) if i not in matched_r], [j for j in range(m) if j not in matched_c]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU float (N, M) of xyxy boxes a (N, 4) and b (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return torchvision.ops.box_iou(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    ).numpy()


# ================================================================== ByteTrack
@dataclass(frozen=True)
class TrackConfig:
    """ByteTrack's settings (its published defaults).

    high_thresh: detections above it start and first meet the tracks; low_thresh: detections
        between the two meet the tracks left over (below low_thresh: ignored).
    new_track_thresh: an unmatched detection starts a track above this score.
    match_thresh: the largest 1 - IoU (fused with the score) accepted in the first association.
    track_buffer: frames (at 30 fps) a lost track is kept for re-identification.
    trail: box centres kept per track for drawing.
    """

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_thresh: float = 0.8
    track_buffer: int = 30
    trail: int = 30

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_thresh <= self.high_thresh < 1.0:
            raise Yolo4Error(
                f"tracking: need 0 <= low_thresh ({self.low_thresh}) <= high_thresh ({self.high_thresh}) < 1"
            )
        if not 0.0 < self.match_thresh <= 1.0 or self.track_buffer < 0:
            raise Yolo4Error(f"tracking: bad match_thresh {self.match_thresh} or track_buffer {self.track_buffer}")


TRACKED, LOST, REMOVED = "tracked", "lost", "removed"


@dataclass(eq=False)
class Track:
    """One object's track: its Kalman filter, id (0 until confirmed), state and trail."""

    kalman: KalmanBox
    score: float
    class_id: int
    track_id: int = 0
    state: str = TRACKED
    confirmed: bool = False
    last_frame: int = 0
    start_frame: int = 0
    trail: deque = field(default_factory=deque)

    @property
    def box(self) -> np.ndarray:
        return self.kalman.box

    def hit(self, box: np.ndarray, score: float, class_id: int, frame: int) -> None:
        self.kalman.update(box)
        self.score, self.class_id, self.state, self.last_frame = score, class_id, TRACKED, frame
        b = self.kalman.box
        self.trail.append(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))


@dataclass
class Tracks:
    """The confirmed tracks seen in one frame: ids int64 (M,), boxes float32 (M, 4) xyxy (the
    filtered boxes), scores float32 (M,), class_ids int64 (M,)."""

    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class ByteTracker:
    """ByteTrack over one video (see the module docstring); `update` once per frame, in order."""

    def __init__(self, config: TrackConfig = TrackConfig(), frame_rate: float = 30.0):
        self.config = config
        self.max_lost = max(1, int(round(frame_rate / 30.0 * config.track_buffer)))
        self.frame = 0
        self.tracks: list[Track] = []  # tracked (confirmed or not) and lost
        self._next_id = 1

    def _associate(self, tracks: list[Track], boxes, scores, limit: float, fuse: bool):
        cost = 1.0 - _iou(np.array([t.box for t in tracks]).reshape(-1, 4), boxes)
        if fuse:
            cost = 1.0 - (1.0 - cost) * scores[None, :]
        return linear_assignment(cost, limit)

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> Tracks:
        """One frame's detections in, the frame's confirmed tracks out.

        Args:
            boxes: float (N, 4) xyxy. scores: float (N,). class_ids: int (N,).
        Returns:
            Tracks, sorted by id.
        """
        cfg = self.config
        self.frame += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        high = np.nonzero(scores > cfg.high_thresh)[0]
        low = np.nonzero((scores > cfg.low_thresh) & (scores <= cfg.high_thresh))[0]

        pool = [t for t in self.tracks if t.confirmed]  # tracked and lost
        unconfirmed = [t for t in self.tracks if not t.confirmed]
        for t in pool:
            t.kalman.predict(keep_height_velocity=t.state == TRACKED)

        # 1. confirmed tracks (tracked and lost) with the high-score detections
        pairs, rest_t, rest_d = self._associate(pool, boxes[high], scores[high], cfg.match_thresh, fuse=True)
        for ti, di in pairs:
            d = high[di]
            pool[ti].hit(boxes[d], scores[d], class_ids[d], self.frame)
        high_left = high[rest_d]
        # 2. tracks still unmatched that were tracked (not lost) with the low-score detections
        second = [pool[i] for i in rest_t if pool[i].state == TRACKED]
        pairs, rest_t2, _ = self._associate(second, boxes[low], scores[low], 0.5, fuse=False)
        for ti, di in pairs:
            d = low[di]
            second[ti].hit(boxes[d], scores[d], class_ids[d], self.frame)
        for i in rest_t2:
            second[i].state = LOST
        # 3. tracks started last frame with the high-score detections left
        pairs, rest_u, rest_d = self._associate(unconfirmed, boxes[high_left], scores[high_left], 0.7, fuse=True)
        for ti, di in pairs:
            d = high_left[di]
            unconfirmed[ti].hit(boxes[d], scores[d], class_ids[d], self.frame)
            self._confirm(unconfirmed[ti])
        for i in rest_u:
            unconfirmed[i].state = REMOVED
        # 4. new tracks from the high-score detections nobody took
        for d in high_left[rest_d]:
            if scores[d] < cfg.new_track_thresh:
                continue
            b = boxes[d]
            t = Track(KalmanBox(b), float(scores[d]), int(class_ids[d]), last_frame=self.frame, start_frame=self.frame)
            t.trail = deque([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)], maxlen=cfg.trail)
            if self.frame == 1:
                self._confirm(t)
            self.tracks.append(t)
        # 5. forget tracks lost for too long
        for t in self.tracks:
            if t.state == LOST and self.frame - t.last_frame > self.max_lost:
                t.state = REMOVED
        self._drop_duplicates()
        self.tracks = [t for t in self.tracks if t.state != REMOVED]
        shown = sorted((t for t in self.tracks if t.confirmed and t.state == TRACKED), key=lambda t: t.track_id)
        return Tracks(
            ids=np.array([t.track_id for t in shown], np.int64),
            boxes=np.array([t.box for t in shown], np.float32).reshape(-1, 4),
            scores=np.array([t.score for t in shown], np.float32),
            class_ids=np.array([t.class_id for t in shown], np.int64),
        )

    def _drop_duplicates(self) -> None:
        """A lost track and a tracked one on the same box (IoU > 0.85): keep the older."""
        tracked = [t for t in self.tracks if t.confirmed and t.state == TRACKED]
        lost = [t for t in self.tracks if t.state == LOST]
        if not tracked or not lost:
            return
        iou = _iou(np.array([t.box for t in tracked]), np.array([t.box for t in lost]))
        for i, j in zip(*np.nonzero(iou > 0.85)):
            a, b = tracked[i], lost[j]
            younger = a if self.frame - a.start_frame < self.frame - b.start_frame else b
            younger.state = REMOVED

    def _confirm(self, t: Track) -> None:
        t.confirmed, t.track_id = True, self._next_id
        self._next_id += 1

    def trails(self) -> dict[int, list[tuple[float, float]]]:
        """Recent box centres of every confirmed, currently tracked track, by id."""
        return {t.track_id: list(t.trail) for t in self.tracks if t.confirmed and t.state == TRACKED}


# ================================================================== outputs
def mot_lines(frame: int, tracks: Tracks) -> list[str]:
    """MOTChallenge text rows for one frame (1-based): `frame,id,left,top,width,height,score,-1,-1,-1`."""
    rows = []
    for tid, (x1, y1, x2, y2), s in zip(tracks.ids.tolist(), tracks.boxes.tolist(), tracks.scores.tolist()):
        rows.append(f"{frame},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1")
    return rows


def frame_record(frame: int, tracks: Tracks, names: Sequence[str]) -> dict:
    """The JSON record of one frame: `{"frame", "tracks": [{"id", "class_id", "class_name", "score", "box"}]}`."""
    return {
        "frame": frame,
        "tracks": [
            {
                "id": int(tid),
                "class_id": int(c),
                "class_name": names[c] if 0 <= c < len(names) else str(c),
                "score": round(float(s), 5),
                "box": [round(float(v), 2) for v in box],
            }
            for tid, box, s, c in zip(tracks.ids, tracks.boxes, tracks.scores, tracks.class_ids.tolist())
        ],
    }


@dataclass
class TrackSummary:
    """What `run_track` did: frames, distinct confirmed ids, and the files it wrote."""

    frames: int = 0
    ids: int = 0
    video: Path | None = None
    mot: Path | None = None
    json: Path | None = None


def run_track(
    source: str | os.PathLike,
    *,
    model: str | os.PathLike | nn.Module | None = None,
    weights: str | os.PathLike | None = None,
    names: str | os.PathLike | Sequence[str] | None = None,
    img_size: int | None = None,
    resize: str | None = None,
    postprocess: PostprocessConfig = TRACK_POSTPROCESS,
    device: str = "auto",
    config: TrackConfig = TrackConfig(),
    batch: int = 1,
    out: str | os.PathLike = "runs/track",
    progress: bool = True,
    runner=None,
    pipeline: bool = True,
    speed: SpeedConfig | None = None,
) -> TrackSummary:
    """`yolo4 track`: detect on every frame of a video file or camera, track with ByteTrack, and
    write `<stem>.mp4` (ids and trails drawn), `<stem>.txt` (MOTChallenge rows) and
    `<stem>.jsonl` (one `frame_record` per frame) into the folder `out`. `postprocess` is the
    detector's (default `TRACK_POSTPROCESS`: conf 0.1, so that ByteTrack sees the low-score
    boxes; keep conf at or below `config.low_thresh`); `speed` how the network runs (default:
    the device's, `SpeedConfig.for_device`). Decoding, the detector's three stages and tracking + drawing run in a `Pipeline`.
    """
    import cv2
    from tqdm import tqdm

    from yolo4.data.sources import VideoSource, iter_frames, open_video, resolve_sources
    from yolo4.inference.detector import build_detector
    from yolo4.inference.pipeline import Pipeline, batched
    from yolo4.viz.draw import draw_tracks

    found, problems = resolve_sources([source])
    if problems or len(found) != 1 or not isinstance(found[0], VideoSource):
        why = problems[0] if problems else f"{source}: not a video file or camera index"
        raise DataError(why)
    src = found[0]
    detector = build_detector(
        model,
        weights,
        names=names,
        img_size=img_size,
        resize=resize,
        postprocess=postprocess,
        device=device,
        runner=runner,
        speed=speed,
    )
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Yolo4Error(f"{out_dir}: cannot create the output folder ({e.strerror or e})") from None
    cap, fps, count = open_video(src)
    stem = src.path.stem if src.path is not None else f"webcam{src.camera}"
    video, mot_path, json_path = out_dir / f"{stem}.mp4", out_dir / f"{stem}.txt", out_dir / f"{stem}.jsonl"
    summary = TrackSummary(video=video, mot=mot_path, json=json_path)
    tracker = ByteTracker(config, frame_rate=fps)
    seen: set[int] = set()

    def batches() -> Iterator[tuple[list[np.ndarray], list[str]]]:  # the pipeline's source: decoding
        first = 0
        for chunk in batched(iter_frames(cap), batch):
            yield chunk, [f"{src.name}#frame={first + i}" for i in range(len(chunk))]
            first += len(chunk)

    def prepare(item):
        return detector.prepare(*item)

    def track_and_draw(results):
        out = []
        for r in results:
            tracks = tracker.update(r.boxes, r.scores, r.class_ids)
            drawn = draw_tracks(r.image, tracks.boxes, tracks.ids, tracks.class_ids, detector.names, tracker.trails())
            out.append((tracks, drawn))
        return out

    detector.warmup()
    writer = None
    bar = tqdm(total=count or None, desc=src.name, unit="frame", disable=not progress, file=sys.stderr)
    pipe = Pipeline([prepare, detector.forward, detector.finish, track_and_draw], threaded=pipeline)
    try:
        with open(mot_path, "w") as mot, open(json_path, "w") as js:
            for items in pipe.run(batches()):
                for tracks, drawn in items:
                    summary.frames += 1
                    seen.update(tracks.ids.tolist())
                    if writer is None:
                        h, w = drawn.shape[:2]
                        writer = cv2.VideoWriter(str(summary.video), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
                        if not writer.isOpened():
                            raise DataError(f"{summary.video}: cannot create the output video")
                    writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                    for row in mot_lines(summary.frames, tracks):
                        mot.write(row + "\n")
                    js.write(json.dumps(frame_record(summary.frames, tracks, detector.names)) + "\n")
                bar.update(len(items))
                bar.set_postfix(ids=len(seen), refresh=False)
    except KeyboardInterrupt:
        tqdm.write(f"{src.name}: stopped after {summary.frames} frames", file=sys.stderr)
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()
    if summary.frames == 0:
        raise DataError(f"{src.name}: no frame could be read")
    summary.ids = len(seen)
    print(
        f"{summary.frames} frames, {summary.ids} track ids. Results in {out_dir}: {video.name}, {mot_path.name}, {json_path.name}"
    )
    return summary
