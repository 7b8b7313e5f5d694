"""Frames per second of `yolo4 detect video.mp4` with and without the stage pipeline.

    python benchmarks/bench_video.py --run runs/demo             # the demo's yolov4-tiny at 320
    python benchmarks/bench_video.py --model yolov4-tiny --random-weights --img-size 416

The video: `render_shapes_video` frames (moving shapes) upscaled to `--frame-size` (default
1280x720, so that decoding, resizing, drawing and encoding cost what they cost on real
footage), written once as mp4. Each mode runs `run_detect` on it (the whole job: decode,
pre-process, network, NMS, draw, encode the output video), alternating the modes `--repeats`
times and keeping each mode's best wall time:

    sequential   every stage of a batch one after another in one thread (`pipeline=False`)
    pipeline     decode | pre-process | network | post-process | draw in their own threads

Both modes are started from a worker thread, not the main thread: on this project's 2-core VM,
loaded by other jobs, a 2-thread PyTorch forward called from the main thread took 2-5 s against
0.06-0.2 s from any other thread (`torch.get_num_threads()` 2 in both), which would have
credited the pipeline (whose network runs in its own thread) with a 12x that is not its doing.

Prints frames/s of each and the ratio, and writes `<out>/video_table.md`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import cv2
import torch

from yolo4.data.shapes import SHAPES_NAMES, ShapesVideoConfig, render_shapes_video
from yolo4.inference.detect import run_detect

REPO = Path(__file__).resolve().parents[1]


def write_video(path: Path, frames: int, size_wh: tuple[int, int]) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size_wh)
    for image, *_ in render_shapes_video(ShapesVideoConfig(num_frames=frames, img_size=320)):
        w.write(cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), size_wh, interpolation=cv2.INTER_LINEAR))
    w.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"), help="a `yolo4 train --demo` folder")
    ap.add_argument("--model", default=None, help="a cfg or zoo name (default RUN/train/best.cfg)")
    ap.add_argument("--weights", default=None, help="default RUN/train/best.weights")
    ap.add_argument("--random-weights", action="store_true", help="time a zoo model with random weights")
    ap.add_argument("--img-size", type=int, default=320)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--frame-size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or str(Path(args.run) / "train" / "best.cfg")
    weights = args.weights or (None if args.random_weights else str(Path(args.run) / "train" / "best.weights"))
    names = None
    if args.random_weights:
        from yolo4.darknet import load, save_weights

        tmp_w = Path(tempfile.mkdtemp()) / "random.weights"
        save_weights(load(model), tmp_w)
        weights = str(tmp_w)
    elif args.model is None:
        names = list(SHAPES_NAMES)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "shapes.mp4"
        write_video(video, args.frames, tuple(args.frame_size))
        best: dict[str, float] = {}
        for _ in range(args.repeats):
            for mode, threaded in (("sequential", False), ("pipeline", True)):
                kw = {
                    "model": model,
                    "weights": weights,
                    "names": names,
                    "img_size": args.img_size,
                    "device": "cpu",
                    "batch": args.batch,
                    "out": Path(tmp) / mode,
                    "progress": False,
                    "pipeline": threaded,
                }
                done: list = []
                t0 = time.perf_counter()
                job = threading.Thread(target=lambda kw=kw, done=done: done.append(run_detect([video], **kw)))
                job.start()
                job.join()
                fps = done[0].processed / (time.perf_counter() - t0)
                best[mode] = max(best.get(mode, 0.0), fps)
                print(f"{mode:10s} {done[0].processed} frames {fps:6.2f} frames/s")
    cores = os.cpu_count()
    w, h = args.frame_size
    table = [
        f"| mode | frames/s ({w}x{h} mp4 -> {args.img_size} input, batch {args.batch}, {cores} cores) |",
        "|---|---|",
        f"| sequential (`pipeline=False`) | {best['sequential']:.1f} |",
        f"| pipeline (threads per stage) | {best['pipeline']:.1f} ({best['pipeline'] / best['sequential']:.2f}x) |",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "video_table.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
