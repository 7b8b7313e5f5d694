"""GPU speed in one run: a plain PyTorch module beside yolo4's fast path, inference and training.

    python benchmarks/bench_gpu.py --out results/gpu        # a CUDA machine: every table, <= --budget-s
    python benchmarks/bench_gpu.py --smoke --out /tmp/smoke  # no GPU: a tiny CPU version of the same run

Inference, per model at its paper size (yolov4 608, yolov4-csp 512, yolov4-tiny 416) and batch
(1, 8, 32, 64), three ways of running the same network with the same random weights:

    eager fp32   the module as a peer PyTorch port runs it: fp32 (cuDNN's default TF32 convolutions),
                 NCHW, BatchNorm as separate layers, no compile; NMS image by image
    eager fp16   the same with `model.half()`
    yolo4 fast   `yolo4.inference.fastpath.FAST_CUDA`: fp16, BatchNorm folded, channels_last,
                 torch.compile (reduce-overhead: CUDA graphs), pinned asynchronous upload,
                 batched NMS: what `yolo4 detect`/`val`/`benchmark` use on CUDA

"network" times the forward pass on an input already on the GPU; "end-to-end" starts from a
host batch of uint8 images already resized (resizing is the same CPU work for all three) and
ends with the detections on the host: upload, network, decode, NMS, copy back. Each figure is
the median of 3 blocks of back-to-back iterations (up to --iters, at most ~0.3 s a block).
cuDNN's autotuner is on for every way (`torch.backends.cudnn.benchmark`, as the fast path sets it). The
head biases get the training prior (`init_head_biases`), so that random weights give few
candidates at the detect threshold, as a trained model does; candidates per image are written
down. Compile time (first call) is reported beside each compiled row.

Then training images/s for yolov4-tiny (416, batch 64) and yolov4-csp (512, batch 16): step
only (a batch already on the GPU) for fp32 eager (foreach SGD, NCHW), yolo4's recipe (AMP fp16 +
GradScaler, channels_last, fused SGD) and that recipe with the model compiled; then the recipe
with the real loader (Mosaic, pinned memory, workers) on a generated `shapes` set. Last, the
compile modes side by side (default, reduce-overhead, max-autotune-no-cudagraphs) for batch 1
and 32, which is what FAST_CUDA's mode is chosen by.

A time guard (`--budget-s`, default 480) skips what would not finish in time, most important
first; every finished figure is written at once (gpu.json, gpu_tables.md in --out), so a run
stopped from outside keeps what it measured. Nothing here is a claim until a GPU has run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolo4.darknet.network import Darknet
from yolo4.inference.device import native_bf16
from yolo4.inference.fastpath import EAGER, FAST_CUDA, PRECISIONS, FastNetwork, SpeedConfig, upload
from yolo4.models.zoo import resolve_spec
from yolo4.ops.boxes import decode_heads
from yolo4.ops.nms import DETECT_POSTPROCESS, batched_postprocess, postprocess
from yolo4.training.build import init_head_biases

MODELS = (("yolov4", 608), ("yolov4-csp", 512), ("yolov4-tiny", 416))
BATCHES = (1, 8, 32, 64)
TRAIN = (("yolov4-tiny", 416, 64), ("yolov4-csp", 512, 16))
COMPILE_GUESS_S = {"yolov4": 150.0, "yolov4-csp": 150.0, "yolov4-tiny": 60.0}  # before one is measured


class Guard:
    """The time budget: `fits(estimate)` is False once an item would end past the deadline."""

    def __init__(self, budget_s: float):
        self.t0, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def fits(self, estimate_s: float) -> bool:
        return estimate_s < self.left()


class Report:
    """Rows as they come: JSON and Markdown rewritten after each one, tables printed at the end."""

    def __init__(self, out: Path, meta: dict[str, Any]):
        self.out, self.meta = out, meta
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.skipped: list[str] = []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)
        print(f"[{table}] " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        self.write()

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"skipped (time guard): {what}", flush=True)
        self.write()

    def markdown(self) -> str:
        parts = [f"{self.meta['device']}, torch {self.meta['torch']}, {self.meta['mode']}\n"]
        for name, rows in self.tables.items():
            keys = list(dict.fromkeys(k for r in rows for k in r))
            parts.append(f"### {name}\n")
            parts.append("| " + " | ".join(keys) + " |")
            parts.append("|" + "---|" * len(keys))
            parts += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
            parts.append("")
        if self.skipped:
            parts.append("Skipped by the time guard: " + "; ".join(self.skipped))
        return "\n".join(parts) + "\n"

    def write(self) -> None:
        data = {"meta": self.meta, "tables": self.tables, "skipped": self.skipped}
        (self.out / "gpu.json").write_text(json.dumps(data, indent=1))
        (self.out / "gpu_tables.md").write_text(self.markdown())


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(fn: Callable[[], Any], device: torch.device, iters: int, blocks: int = 3) -> float:
    """Median over `blocks` of the mean seconds of one call, `iters` calls back to back."""
    means = []
    for _ in range(blocks):
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        means.append((time.perf_counter() - t) / iters)
    return statistics.median(means)


# ------------------------------------------------------------------ inference
def make_model(name: str, size: int, seed: int = 0) -> Darknet:
    """The zoo network at `size` with random weights, BatchNorm statistics far from identity and
    the training prior on the head biases (few candidates at the detect threshold)."""
    torch.manual_seed(seed)
    model = Darknet(resolve_spec(name, img_size=size))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    init_head_biases(model, (size, size))
    return model.eval()


class Way:
    """One way of running a network end to end: host uint8 (B, H, W, 3) -> detections on the host."""

    def __init__(self, model: Darknet, speed: SpeedConfig, device: torch.device, peer: bool):
        self.speed, self.device, self.peer = speed, device, peer
        self.net = FastNetwork(model, speed, device)
        self.layers, self.hw = model.yolo_layers, model.input_hw

    def network(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)

    def end_to_end(self, images: np.ndarray) -> list[np.ndarray]:
        if self.peer:  # a pageable copy, converted on the GPU, NCHW
            x = (
                torch.from_numpy(images)
                .to(self.device)
                .permute(0, 3, 1, 2)
                .to(PRECISIONS[self.speed.precision])
                .div_(255)
            )
        else:
            x = upload(images, self.device, self.speed)
        with torch.inference_mode():
            dec = decode_heads(self.network(x), self.layers, self.hw)
            nms = batched_postprocess if self.speed.batched_nms else postprocess
            kept = nms(*dec, DETECT_POSTPROCESS)
            if self.peer:  # image by image to the host, as a plain loop does
                return [torch.cat([k.boxes, k.scores[:, None]], 1).cpu().numpy() for k in kept]
            packed = torch.cat([torch.cat([k.boxes, k.scores[:, None]], 1) for k in kept]).cpu()
            return [p.numpy() for p in packed.split([len(k.scores) for k in kept])]


def ways(device: torch.device, smoke: bool) -> dict[str, tuple[SpeedConfig, bool]]:
    """name -> (SpeedConfig, peer style)."""
    if device.type != "cuda":  # the CPU smoke run: the same code, precisions a CPU has
        fast = EAGER.replace(fold_bn=True, channels_last=True, batched_nms=True, compile="off" if smoke else "default")
        half = {"eager bf16": (EAGER.replace(precision="bf16"), True)} if native_bf16() else {}  # (refused elsewhere)
        return {"eager fp32": (EAGER, True), **half, "yolo4 fast": (fast, False)}
    return {
        "eager fp32": (EAGER, True),
        "eager fp16": (EAGER.replace(precision="fp16"), True),
        "yolo4 fast": (FAST_CUDA, False),
    }


def bench_inference(
    report: Report, guard: Guard, device: torch.device, name: str, size: int, batch: int, smoke: bool, iters: int
) -> None:
    """One (model, batch): every way, network and end-to-end."""
    model = make_model(name, size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    x_host = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    for way_name, (speed, peer) in ways(device, smoke).items():
        compiled = speed.compile != "off"
        estimate = (COMPILE_GUESS_S.get(name, 120.0) if compiled else 5.0) + 10.0
        if not guard.fits(estimate):
            report.skip(f"{name} {size} batch {batch} {way_name}")
            continue
        torch._dynamo.reset()
        way = Way(model, speed, device, peer)
        x = way.net.input(x_host)
        t = time.perf_counter()
        way.network(x)  # the first call: compile (and CUDA graph capture) when compiled
        way.network(x)
        _sync(device)
        first_s = time.perf_counter() - t
        if compiled:
            COMPILE_GUESS_S[name] = first_s
        t = time.perf_counter()
        way.network(x)
        _sync(device)
        n = max(2, min(iters, int(0.3 / max(time.perf_counter() - t, 1e-6))))  # blocks of ~0.3 s at most
        net_s = time_block(lambda w=way, x=x: w.network(x), device, n)
        out = way.end_to_end(images)
        e2e_s = time_block(lambda w=way: w.end_to_end(images), device, n)
        report.add(
            "inference",
            {
                "model": name,
                "input": size,
                "batch": batch,
                "way": way_name,
                "network ms/batch": net_s * 1e3,
                "network img/s": batch / net_s,
                "end-to-end ms/batch": e2e_s * 1e3,
                "end-to-end img/s": batch / e2e_s,
                "first call s": first_s,
                "detections/img": sum(len(o) for o in out) / batch,
                "speed": speed.describe() + ("" if way.net.compiled or not compiled else " (compile FAILED: eager)"),
            },
        )
        del way
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_compile_modes(report: Report, guard: Guard, device: torch.device, name: str, size: int, batch: int) -> None:
    """FAST_CUDA with each compile mode: network ms and the first call (compile) seconds."""
    model = make_model(name, size)
    x_host = torch.rand(batch, 3, size, size)
    for mode in ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"):
        estimate = (2.5 if "autotune" in mode else 1.0) * COMPILE_GUESS_S.get(name, 120.0) + 10
        if not guard.fits(estimate):
            report.skip(f"compile mode {mode} {name} batch {batch}")
            continue
        torch._dynamo.reset()
        net = FastNetwork(
            model, FAST_CUDA.replace(compile=mode) if device.type == "cuda" else EAGER.replace(compile=mode), device
        )
        x = net.input(x_host)
        t = time.perf_counter()
        net(x)
        net(x)
        _sync(device)
        first_s = time.perf_counter() - t
        net_s = time_block(lambda n=net, x=x: n(x), device, 10)
        report.add(
            "compile modes",
            {"model": name, "input": size, "batch": batch, "mode": mode, "network ms/batch": net_s * 1e3,
             "network img/s": batch / net_s, "first call s": first_s},
        )  # fmt: skip


# ------------------------------------------------------------------ training
def _train_setup(name: str, size: int, device: torch.device, recipe: bool):
    from yolo4.data.shapes import SHAPES_NAMES
    from yolo4.training.build import build_model, make_loss, make_optimizer
    from yolo4.training.config import TrainConfig
    from yolo4.training.defaults import LR

    cfg = TrainConfig(data="unused", model=name, img_size=size, amp=recipe, lr=LR)
    torch.manual_seed(0)
    model, _ = build_model(cfg, list(SHAPES_NAMES))
    model.to(device)
    if recipe:
        model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg, model)  # fused on CUDA
    else:  # a peer's loop: PyTorch's default SGD (foreach), fp32, NCHW
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return cfg, model, make_loss(cfg, model), optimizer


def train_steps(name: str, size: int, batch: int, device: torch.device, variant: str, batches, steps: int):
    """Seconds per optimizer step over `steps` steps (after 3 warm-up steps) and the first step's seconds."""
    from yolo4.training.build import autocast_dtype

    recipe = variant != "eager fp32"
    cfg, model, loss_fn, optimizer = _train_setup(name, size, device, recipe)
    amp = autocast_dtype(cfg, device) if recipe else None
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    forward = torch.compile(model) if variant.endswith("compiled") else model
    hw = (size, size)

    def step() -> None:
        images, targets = next(batches)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if recipe:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outs = forward(images)
        loss, _ = loss_fn([o.float() for o in outs], targets, hw)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t = time.perf_counter()
    for _ in range(3):
        step()
    _sync(device)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t) / steps, first_s


def synthetic_batches(batch: int, size: int, device: torch.device):
    """The same batch forever, already on the device: 6 boxes per image."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g).to(device)
    rows = []
    for b in range(batch):
        for _ in range(6):
            x, y = (torch.rand(2, generator=g) * (size - 64)).tolist()
            w, h = (16 + torch.rand(2, generator=g) * 48).tolist()
            rows.append([b, int(torch.randint(0, 7, (1,), generator=g)), x, y, x + w, y + h])
    targets = torch.tensor(rows).to(device)
    while True:
        yield images, targets


def loader_batches(data: Path, name: str, size: int, batch: int, workers: int):
    """The training loader as `yolo4 train` builds it (Mosaic, HSV, flip; pinned memory on CUDA), endless."""
    from yolo4.data.dataset import load_dataset
    from yolo4.data.loader import build_loader
    from yolo4.training.build import augment_config
    from yolo4.training.config import TrainConfig
    from yolo4.training.defaults import resolve_defaults

    train_set = load_dataset(data, "train", progress=False)
    train_set.cache_images()
    cfg = TrainConfig(data=str(data), model=name, img_size=size)
    cfg, _ = resolve_defaults(cfg, train_set, torch.device("cpu"))  # the augmentation a training run resolves
    loader = build_loader(train_set, size, batch, augment_config(cfg), shuffle=True, workers=workers, drop_last=True)
    while True:
        for images, targets, _ in loader:
            yield images, targets


def bench_training(report: Report, guard: Guard, device: torch.device, smoke: bool, data: Path | None, workers: int):
    runs = (("yolov4-tiny", 64, 2),) if smoke else TRAIN
    steps = 2 if smoke else 20
    for name, size, batch in runs:
        variants = ["eager fp32", "yolo4 recipe"] + ([] if smoke else ["yolo4 recipe, compiled"])
        for variant in variants:
            estimate = (COMPILE_GUESS_S.get(name, 120.0) * 2 if "compiled" in variant else 10.0) + 20
            if not guard.fits(estimate):
                report.skip(f"training {name} {variant}")
                continue
            torch._dynamo.reset()
            step_s, first_s = train_steps(
                name, size, batch, device, variant, synthetic_batches(batch, size, device), steps
            )
            report.add(
                "training",
                {"model": name, "input": size, "batch": batch, "variant": variant, "data": "on the GPU (step only)",
                 "img/s": batch / step_s, "ms/step": step_s * 1e3, "first 3 steps s": first_s},
            )  # fmt: skip
        if data is None or not guard.fits(60.0):
            report.skip(f"training {name} with the loader")
            continue
        torch._dynamo.reset()
        step_s, first_s = train_steps(
            name, size, batch, device, "yolo4 recipe", loader_batches(data, name, size, batch, workers), steps
        )
        report.add(
            "training",
            {"model": name, "input": size, "batch": batch, "variant": "yolo4 recipe",
             "data": f"loader: Mosaic, {workers} workers, pinned", "img/s": batch / step_s, "ms/step": step_s * 1e3,
             "first 3 steps s": first_s},
        )  # fmt: skip


def make_data(root: Path, smoke: bool) -> Path:
    from yolo4.data.shapes import ShapesConfig, make_shapes

    cfg = (
        ShapesConfig(num_train=8, num_val=2, img_size=64, size_range=(8, 32))
        if smoke
        else ShapesConfig(num_train=512, num_val=8, img_size=416)
    )
    return make_shapes(root / "shapes", cfg, progress=False)


# ------------------------------------------------------------------ main
def _out_of_time(signum, frame) -> None:
    raise TimeoutError("bench_gpu: the hard time limit")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/gpu", help="folder for gpu.json and gpu_tables.md")
    p.add_argument("--budget-s", type=float, default=480.0, help="stop starting new work after this (default 480)")
    p.add_argument("--smoke", action="store_true", help="the tiny CPU version (what CI can run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="training loader workers")
    p.add_argument("--iters", type=int, default=None, help="iterations per timed block (default 20; smoke 2)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and a.smoke:
        p.error("--smoke is the CPU version; drop it on a GPU")
    if device.type != "cuda" and not a.smoke:
        p.error(f"no CUDA device here ({a.device}): run with --smoke for the CPU version")
    guard = Guard(a.budget_s)
    torch.backends.cudnn.benchmark = True  # for every way alike (the fast path sets it itself)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    meta = {
        "device": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
        "mode": "smoke (CPU, tiny sizes)" if a.smoke else f"full, budget {a.budget_s:.0f} s",
        "argv": sys.argv[1:],
    }
    report = Report(Path(a.out), meta)
    iters = a.iters or (2 if a.smoke else 20)
    if a.smoke:
        models, first, later = (("yolov4-tiny", 64),), (1, 2), ()
    else:
        models, first, later = MODELS, (1, 32), (8, 64)
    hard_stop = int(a.budget_s + 60)  # an item that overruns its estimate (a slow compile) is cut here
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(min(hard_stop, 10**7))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # most important first: batch 1 and 32 for every model, then training, then the other batches
            for name, size in models:
                for b in first:
                    bench_inference(report, guard, device, name, size, b, a.smoke, iters)
            data = make_data(Path(tmp), a.smoke) if guard.fits(60.0) else None
            bench_training(report, guard, device, a.smoke, data, 0 if a.smoke else a.workers)
            for name, size in models:
                for b in later:
                    bench_inference(report, guard, device, name, size, b, a.smoke, iters)
            if not a.smoke:
                for b in (1, 32):
                    bench_compile_modes(report, guard, device, "yolov4-tiny", 416, b)
    except TimeoutError:
        report.skip(f"everything after {hard_stop} s (the hard stop cut the item that was running)")
    finally:
        signal.alarm(0)
    report.meta["seconds"] = round(a.budget_s - guard.left(), 1)
    report.write()
    print()
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
