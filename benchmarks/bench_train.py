"""Where a training step's time goes: data, forward, loss, backward, optimiser + EMA, per input
size and precision, for the demo's recipe (yolov4-tiny, batch 16, Mosaic 0.5, neighbour cells).

    python benchmarks/bench_train.py                        # CPU: 192 and 256 px, bf16 (if native) and fp32
    python benchmarks/bench_train.py --sizes 256 416 --device cuda --batch 64

Without --data it writes a small `shapes` dataset to a temporary folder. The data column is
the main process loading and augmenting a batch (the demo's `workers=0` on 2 cores), read from
an in-memory image cache as the demo does. The GFLOP/s columns are the network's FLOPs
(darknet's count, 2 per multiply-add; the backward pass taken as twice the forward) over the
phase's time: against the cores' peak they say whether a step is compute-bound. Prints a
Markdown table for the README.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from yolo4.data.dataset import load_dataset
from yolo4.data.loader import build_loader
from yolo4.data.shapes import ShapesConfig, make_shapes
from yolo4.inference.device import cpu_description
from yolo4.models.summary import model_info
from yolo4.training.build import (
    augment_config,
    autocast_dtype,
    build_model,
    make_loss,
    make_optimizer,
    select_device,
    train_box_sizes,
)
from yolo4.training.config import TrainConfig
from yolo4.training.defaults import resolve_defaults
from yolo4.training.demo import DemoConfig
from yolo4.training.ema import ModelEMA

PHASES = ("data", "forward", "loss", "backward", "optimizer+EMA")


def time_steps(
    data: Path, size: int, batch: int, amp: bool, device: torch.device, steps: int, warmup: int = 3
) -> tuple[dict[str, float], float]:
    """Median milliseconds of each phase of one optimizer step (no gradient accumulation), and
    the network's forward GFLOPs per image at `size`."""
    cfg = DemoConfig(batch=batch).train_config(data, "unused", device, progress=False)
    cfg.amp, cfg.img_size = amp, size
    train_set = load_dataset(data, "train", progress=False)
    cfg, _ = resolve_defaults(cfg, train_set, device)  # as a training run resolves them
    train_set.cache_images()
    model, _ = build_model(cfg, list(train_set.names), train_box_sizes(train_set, size))
    model.to(device)
    dtype = autocast_dtype(cfg, device)
    channels_last = device.type == "cpu"  # as yolo4.training.train
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = make_loss(cfg, model)
    optimizer, ema = make_optimizer(cfg, model), ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    loader = build_loader(train_set, size, batch, augment_config(cfg), shuffle=True, workers=0, drop_last=True)
    batches = iter(loader)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    times: dict[str, list[float]] = {p: [] for p in PHASES}
    for step in range(warmup + steps):
        t0 = sync()
        try:
            images, targets, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, targets, _ = next(batches)
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t1 = sync()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = model(images)
        t2 = sync()
        loss, _ = loss_fn(outputs, targets, (size, size))
        t3 = sync()
        loss.backward()
        t4 = sync()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        t5 = sync()
        if step >= warmup:
            for phase, (a, b) in zip(PHASES, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]):
                times[phase].append((b - a) * 1000)
    return {p: float(np.median(v)) for p, v in times.items()}, model_info(model.spec, (size, size)).bflops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a dataset (default: a temporary 96-image shapes set)")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 256])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = (
            Path(args.data)
            if args.data
            else make_shapes(Path(tmp) / "shapes", ShapesConfig(num_train=96, num_val=8), progress=False)
        )
        print(
            f"yolov4-tiny training step, batch {args.batch}, {device}, {torch.get_num_threads()} threads; "
            f"median ms over {args.steps} steps\nCPU: {cpu_description()}; PyTorch CPU kernels: "
            f"{torch.backends.cpu.get_cpu_capability()}"
        )
        print("\n| input | precision | " + " | ".join(PHASES) + " | ms/step | images/s | GFLOP/s fwd / bwd |")
        print("|---" * (len(PHASES) + 5) + "|")
        for size in args.sizes:
            for amp in (True, False):
                dtype = autocast_dtype(TrainConfig(amp=amp), device)
                if amp and dtype is None:
                    continue  # no native low precision here: the fp32 row says it all
                t, gflops = time_steps(data, size, args.batch, amp, device, args.steps)
                total = sum(t.values())
                fwd = gflops * args.batch / (t["forward"] / 1000)
                bwd = 2 * gflops * args.batch / (t["backward"] / 1000)
                name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
                print(
                    f"| {size} | {name} | "
                    + " | ".join(f"{t[p]:.0f}" for p in PHASES)
                    + f" | {total:.0f} | {1000 * args.batch / total:.0f} | {fwd:.0f} / {bwd:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
