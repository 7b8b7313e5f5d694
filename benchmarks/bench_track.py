"""Tracking quality on a synthetic video with known identities: CLEAR MOT (MOTA, ID switches).

    python benchmarks/bench_track.py --run runs/demo            # the demo's yolov4-tiny

The video: `render_shapes_video` (moving `shapes` of fixed class on a textured background,
bouncing off the borders and passing over each other; an object hidden below 30 % of its
pixels leaves the ground truth). Each row runs ByteTrack over one detection stream and scores
it with `clear_mot` (IoU >= 0.5):

    ground truth                 the true boxes as detections (the tracker alone)
    ground truth, 1 frame in 10 missed   all detections of every 10th frame removed
    model                        the trained detector (conf 0.1, so ByteTrack sees low scores)
    model, 1 frame in 10 missed  the same with every 10th frame's detections removed
    model, high scores only      ByteTrack without its second association (low_thresh = high_thresh)

Prints the table and writes `<out>/track_table.md`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from yolo4.data.shapes import SHAPES_NAMES, ShapesVideoConfig, render_shapes_video
from yolo4.evaluation.tracking import clear_mot
from yolo4.inference.detector import Detector
from yolo4.inference.track import TRACK_POSTPROCESS, ByteTracker, TrackConfig

REPO = Path(__file__).resolve().parents[1]


def track(stream, config: TrackConfig, drop_every: int = 0):
    """ByteTrack over (boxes, scores, class_ids) per frame; every `drop_every`-th frame (if set)
    loses all its detections. Returns per-frame (ids, boxes) and the tracker's ms per frame."""
    tracker = ByteTracker(config, frame_rate=30)
    out, t = [], 0.0
    for k, (boxes, scores, classes) in enumerate(stream):
        if drop_every and k % drop_every == drop_every // 2:
            boxes, scores, classes = boxes[:0], scores[:0], classes[:0]
        t0 = time.perf_counter()
        tr = tracker.update(boxes, scores, classes)
        t += time.perf_counter() - t0
        out.append((tr.ids, tr.boxes))
    return out, t * 1e3 / max(len(out), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"), help="a `yolo4 train --demo` folder")
    ap.add_argument("--cfg", default=None)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--input", type=int, default=320)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = args.cfg or str(Path(args.run) / "train" / "best.cfg")
    weights = args.weights or str(Path(args.run) / "train" / "best.weights")
    video = list(render_shapes_video(ShapesVideoConfig(num_frames=args.frames, num_objects=args.objects, img_size=320)))
    gt = [(ids, boxes) for _, boxes, _, ids in video]
    print(f"{len(video)} frames 320x320, {args.objects} objects, {sum(len(g[0]) for g in gt)} ground-truth boxes")

    truth = [(boxes, np.full(len(boxes), 0.9, np.float32), classes) for _, boxes, classes, _ in video]
    det = Detector(cfg, weights, names=list(SHAPES_NAMES), img_size=args.input, postprocess=TRACK_POSTPROCESS)
    model = []
    for i in range(0, len(video), 8):
        for r in det.predict_batch([v[0] for v in video[i : i + 8]]):
            model.append((r.boxes, r.scores, r.class_ids))
    byte, high_only = TrackConfig(), TrackConfig(low_thresh=0.5)
    rows = []
    for name, stream, config, drop in (
        ("ground truth", truth, byte, 0),
        ("ground truth, 1 frame in 10 missed", truth, byte, 10),
        ("model", model, byte, 0),
        ("model, 1 frame in 10 missed", model, byte, 10),
        ("model, high scores only", model, high_only, 0),
    ):
        frames, ms = track(stream, config, drop)
        m = clear_mot(gt, frames)
        rows.append((name, m, ms))
        print(f"{name:36s} {m.summary()}; tracker {ms:.2f} ms/frame")
    table = [
        "| detections | MOTA | ID switches | FP | FN | track ids / objects | MOTP (IoU) | tracker ms/frame |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {n} | {m.mota:.3f} | {m.id_switches} | {m.false_positives} | {m.misses} | {m.track_ids} / {m.gt_ids} "
        f"| {m.motp:.3f} | {ms:.2f} |"
        for n, m, ms in rows
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "track_table.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
