"""Images per second of `detect_dataset` (Ray Data) with 1 and 2 workers on this machine, beside
the single-process `yolo4 detect`.

    python benchmarks/bench_ray.py --run runs/demo              # the demo's yolov4-tiny at 320

The images: `--images` of the demo's `shapes` val split (256x256 JPEGs). Each Ray run starts a
local Ray instance with `--cpus` CPUs (default all cores), runs the actor pool (`--workers` in
turn, `cpus_per_worker = cpus // workers` PyTorch threads each) and writes Parquet shards to a
fresh folder; its figure is the whole call, Ray's start and the actors' model loading
included. The single-process row is `run_detect` (annotated images and JSON written) with all
cores.

Prints a table and writes `<out>/ray_table.md`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from yolo4.data.shapes import SHAPES_NAMES
from yolo4.inference.cluster import RayConfig, detect_dataset
from yolo4.inference.detect import run_detect

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(REPO / "runs" / "demo"), help="a `yolo4 train --demo` folder")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--img-size", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args()
    import ray

    run = Path(args.run)
    cfg, weights = run / "train" / "best.cfg", run / "train" / "best.weights"
    src = sorted((run / "data" / "images" / "val").glob("*.jpg"))[: args.images]
    settings = {"model": cfg, "weights": weights, "names": list(SHAPES_NAMES), "img_size": args.img_size}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for p in src:
            shutil.copy(p, folder / p.name)
        torch.set_num_threads(args.cpus)
        done: list = []
        t0 = time.perf_counter()  # from a worker thread, as in bench_video.py (the main thread is slow under load)
        kw = {"out": Path(tmp) / "single", "batch": args.batch, "device": "cpu", "progress": False, **settings}
        job = threading.Thread(target=lambda: done.append(run_detect([folder], **kw)))
        job.start()
        job.join()
        wall = time.perf_counter() - t0
        rows.append(("single process (`yolo4 detect`)", 1, done[0].processed / wall, wall))
        for workers in args.workers:
            ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
            try:
                cfg_ray = RayConfig(
                    workers=workers, cpus_per_worker=max(1, args.cpus // workers), shard_size=50, batch=args.batch
                )
                t0 = time.perf_counter()
                out = Path(tmp) / f"ray{workers}"
                summary = detect_dataset(
                    [folder], out=out, ray_config=cfg_ray, device="cpu", progress=False, **settings
                )
                wall = time.perf_counter() - t0
                rows.append((f"Ray, {workers} worker(s)", workers, summary.images / wall, wall))
            finally:
                ray.shutdown()
    table = [
        f"| run ({len(src)} images at {args.img_size}, {args.cpus} CPUs) | workers | images/s | seconds |",
        "|---|---|---|---|",
    ]
    table += [f"| {n} | {w} | {r:.1f} | {t:.0f} |" for n, w, r, t in rows]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ray_table.md").write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
