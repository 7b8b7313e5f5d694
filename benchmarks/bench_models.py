"""Network speed of the zoo on this machine: ms/img and FPS without and with post-processing.

    python benchmarks/bench_models.py                       # CPU, the default set
    python benchmarks/bench_models.py --device cuda --half --batch 8 --models yolov4 yolov4-csp

Random weights (speed does not depend on them; post-processing is timed with a high
confidence threshold so random scores do not flood NMS). Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse

import torch

from yolo4.inference.benchmark import benchmark
from yolo4.inference.device import select_device
from yolo4.inference.speed import SpeedConfig
from yolo4.ops.nms import DETECT_POSTPROCESS

POST = DETECT_POSTPROCESS.replace(conf=0.9)  # random weights: a high threshold keeps NMS representative

DEFAULT = [("yolov4-tiny", 416), ("yolov4-tiny", 256), ("yolov3-tiny", 416), ("yolov4-csp-leaky", 448), ("yolov4", 416)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help="zoo names (default: a representative set)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--half", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    runs = [(m, a.img_size or 416) for m in a.models] if a.models else DEFAULT
    print(f"device {a.device}, batch {a.batch}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("| model | input | BFLOPs | network ms/img | FPS (network) | decode+NMS ms/img | FPS (with post) |")
    print("|---|---|---|---|---|---|---|")
    device = select_device(a.device)
    speed = SpeedConfig.for_device(device).with_flags(half=a.half, device=device)
    for name, size in runs:
        r = benchmark(name, img_size=size, batch=a.batch, device=a.device, iters=a.iters, speed=speed, postprocess=POST)
        print(
            f"| {name} | {size} | {r.bflops:.2f} | {r.network_ms:.1f} | {r.fps_network:.1f} | "
            f"{r.postprocess_ms:.2f} | {r.fps_total:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
