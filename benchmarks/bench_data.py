"""Throughput of the training data pipeline (decode + Mosaic + affine + MixUp + HSV + flip)
at a 608 input: images/s in one process (= per DataLoader worker), and through a DataLoader.

    python benchmarks/bench_data.py                          # shapes images at 512 px, 608 input
    python benchmarks/bench_data.py --data path/to/data.yaml --workers 0 2 4

Without --data it writes a small `shapes` dataset with 512 px images to a temporary folder
(real photos decode a little slower than these JPEGs; pass --data to measure yours).
Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from yolo4.data.augment import AugmentConfig, train_sample
from yolo4.data.dataset import load_dataset
from yolo4.data.loader import build_loader
from yolo4.data.shapes import ShapesConfig, make_shapes


def per_process(ds, img_size: int, cfg: AugmentConfig, n: int) -> float:
    """Images/s of train_sample in this process (single-threaded OpenCV, as in a worker)."""
    cv2.setNumThreads(0)
    rng = np.random.default_rng(0)
    for i in range(5):  # warm-up
        train_sample(ds, i % len(ds), img_size, cfg, rng)
    t = time.perf_counter()
    for _ in range(n):
        train_sample(ds, int(rng.integers(len(ds))), img_size, cfg, rng)
    return n / (time.perf_counter() - t)


def through_loader(ds, img_size: int, cfg: AugmentConfig, workers: int, batches: int, batch_size: int) -> float:
    loader = build_loader(ds, img_size, batch_size, cfg, shuffle=True, workers=workers)

    def forever():
        while True:
            yield from loader

    it = forever()
    next(it)  # start-up (worker spawn) is not throughput
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)[2])
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="a dataset (default: a temporary shapes dataset at 512 px)")
    p.add_argument("--img-size", type=int, default=608)
    p.add_argument("--n", type=int, default=200, help="samples for the per-process figure")
    p.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or make_shapes(
            Path(tmp) / "shapes", ShapesConfig(num_train=200, num_val=2, img_size=512, size_range=(16, 256))
        )
        ds = load_dataset(data, "train", progress=False)
        h, w = (int(v) for v in np.median(ds.image_hw, 0))
        print(f"data: {data} ({len(ds)} images, median {w}x{h}); input {a.img_size}x{a.img_size}\n")
        configs = {
            "mosaic": AugmentConfig(mosaic=1.0, hue=0, saturation=1, exposure=1),
            "mosaic + HSV + flip (default)": AugmentConfig(),
            "mosaic + mixup + HSV + flip": AugmentConfig(mixup=1.0),
            "no mosaic: jitter + HSV + flip": AugmentConfig(mosaic=0.0),
        }
        print("| pipeline | images/s per process (worker) |")
        print("|---|---:|")
        for name, cfg in configs.items():
            print(f"| {name} | {per_process(ds, a.img_size, cfg, a.n):.1f} |", flush=True)
        print(f"\n| DataLoader workers | images/s (default pipeline, batch {a.batch}) |")
        print("|---:|---:|")
        for wk in a.workers:
            print(
                f"| {wk} | {through_loader(ds, a.img_size, AugmentConfig(), wk, a.batches, a.batch):.1f} |", flush=True
            )


if __name__ == "__main__":
    main()
