"""The README's main job: train yolov4-tiny from scratch on the embedded `shapes` dataset,
evaluate it, detect on held-out images, and leave everything in one folder.

    yolo4 train --demo [--out runs/demo] [--device auto]

    runs/demo/
        data/                    the shapes dataset (made once, reused)
        train/                   last.pt, best.pt, best.cfg, best.weights, results.csv, results.png
        val/                     pr_curves.png, confusion_matrix.png, metrics.json, per_class.txt
        detect/                  annotated held-out val images + detections.json
        summary.json             mAP50, mAP50-95, timings, settings

No download: the model starts from random weights. The settings below were tuned to finish
on 2 CPU cores within 15 minutes including dataset generation and evaluation (a GPU, when
present, is used and is much faster). On CPU the number of epochs is set by a training-time
budget (re-planned after every epoch), so a slower or busier machine trains fewer epochs.

Measured on a 2-core Intel Xeon VM with native bf16 (AMX), nothing else running: 16 epochs
(7 at 192 px, 9 at 256 px) in 720 s; the best checkpoint scores mAP50 0.817, mAP50-95 0.435 on
the 300 val images at 320 px; 12.5 min in all (0.873 in 23 epochs on a day the VM ran 1.6x
faster). The same VM restricted to AVX2 (fp32; batch 8 at 192 px) fitted 8 epochs: 0.428. A
2-core AMD EPYC VM (Zen 4: avx512_bf16, no AMX), quiet, with Mosaic off for the last fifth: 21
epochs, 0.876 / 0.498 in 12.6 min; the same VM restricted to AVX2 with today's fp32 settings
(batch 8, the last quarter of the epochs at 256 px, a 13.5-minute budget): 11 epochs, 0.706 /
0.338 in 13.4 min; the Xeon as an AVX-512 CPU without bf16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE), the
same fp32 plan: 15 epochs, 0.813 / 0.417 in 12.9 min. A real AVX2-only CPU (AMD EPYC VM, Zen 3,
~1.6x slower per step than the emulation): 5 epochs, 0.427 / 0.168 in 13.3 min, so the demo
then says how to train longer (`--time-budget`; see the README).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import torch

from yolo4.training.build import autocast_dtype, select_device
from yolo4.training.config import TrainConfig, check_time_budget
from yolo4.training.train import train
from yolo4.training.validation import validate


@dataclass(frozen=True)
class DemoConfig:
    """The demo's size and budget; everything else is `yolo4 train`'s defaults, as any dataset
    gets them (optimizer, learning rate, warm-up, augmentation, EMA, objectness target from
    `TrainConfig`; anchors, positives, image cache and loader processes from
    `yolo4.training.defaults`). What the demo proves is what a user's run does."""

    num_train: int = 1500
    img_size: int = 256
    small_img_size: int | None = 192  # progressive resizing: the first half of the epochs at 192 px (0.6x the time)
    small_img_epochs: float = 0.5
    # on a CPU without native bf16 a float32 step costs ~4x a bf16 one and only 6 epochs of
    # 192 -> 256 px (half and half) fit. Batch 8 is 1.2x faster per image than 16 in float32 (AVX2,
    # 2 threads) and learns more per epoch (6 epochs, two seeds: 0.38 / 0.36 at 16, 0.45 / 0.44 at
    # 8). Three quarters of the epochs at 192 px and the last quarter at 256 px cost about what
    # all at 192 px does (8 such epochs ~ 9.6 at 192) and learn the large objects that a model
    # trained only at 192 px misses at the 320 px evaluation (shapes, bf16, 1 thread, seed 0:
    # 9 epochs at 192 px 0.483 / 0.198, large objects' AP 0.012; 6 at 192 + 2 at 256 px 0.583 /
    # 0.258)
    fp32_small_img_epochs: float = 0.75  # img_size and small_img_size as with bf16
    fp32_batch: int = 8
    # the 15 minutes leave room for a longer training budget where epochs are few: one more
    # 256 px epoch (~100 s on an AVX2 VM); evaluation and detection take ~0.5 min on top
    fp32_train_minutes: float = 13.5
    epochs: int = 40  # at most; on CPU the time budget decides
    train_minutes: float = 12.5  # training budget (dataset generation and evaluation come on top)
    batch: int = 16
    val_img_size: int = 320  # validation, final evaluation and detection: small objects need the pixels
    max_val_images: int = 100  # per-epoch validation subset; the final evaluation uses all 300
    val_every: int = 2  # validate every 2nd epoch (and the last): each pass costs about a tenth of an epoch
    detect_images: int = 16
    gpu_epochs: int = 30  # with a GPU there is no time budget: this many epochs
    few_epochs: int = 8  # fewer than this in the budget: the demo names one that fits HINT_EPOCHS
    seed: int = 0

    def train_config(
        self, data: str | os.PathLike, out: str | os.PathLike, device: torch.device, progress: bool = True
    ) -> TrainConfig:
        """The TrainConfig of the demo's training run."""
        cpu = device.type == "cpu"
        fp32 = cpu and autocast_dtype(TrainConfig(), device) is None
        return TrainConfig(
            data=str(data),
            model="yolov4-tiny",
            out=str(out),
            device=str(device),
            progress=progress,
            seed=self.seed,
            img_size=self.img_size,
            small_img_size=self.small_img_size,
            small_img_epochs=self.fp32_small_img_epochs if fp32 else self.small_img_epochs,
            batch=self.fp32_batch if fp32 else self.batch,
            epochs=self.epochs if cpu else self.gpu_epochs,
            time_budget_min=(self.fp32_train_minutes if fp32 else self.train_minutes) if cpu else None,
            max_val_images=self.max_val_images,
            val_every=self.val_every,
            val_img_size=self.val_img_size,
        )


HINT_EPOCHS = 12  # what a slow CPU is told to budget for (the AVX2 EPYC: 11 epochs, mAP50 0.71)


def few_epochs_hint(epochs: int, minutes: float) -> str:
    """What the demo says when its budget fitted few epochs on this CPU (the model still learning)."""
    longer = 5 * round(minutes * HINT_EPOCHS / max(epochs, 1) / 5)  # at this CPU's pace, in 5-minute steps
    return (
        f"demo: this CPU fitted {epochs} epochs in the {minutes:g}-minute budget and the model was still learning; "
        f"`yolo4 train --demo --time-budget {longer}` trains about {HINT_EPOCHS} here (see the README's demo section)"
    )


def cpu_threads(sample_s: float = 0.5) -> int:
    """Training threads for this CPU: every core this process may use, minus those other jobs
    keep busy. Two OpenMP threads that share a core with another job run several times slower
    than one thread alone, so a busy machine gets fewer threads.

    Busy cores are measured by psutil over `sample_s` seconds (not the load average, which also
    counts tasks waiting on the disk and reads about 1 on some idle VMs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = _busy_cores(sample_s)
    return max(1, min(cores, 16, cores - int(busy + 0.3)))  # a core counts as taken from 70 % use


def _busy_cores(sample_s: float) -> float:
    """Cores' worth of CPU time used by everything on the machine during `sample_s` seconds
    (psutil counts iowait as idle and guest time inside user time)."""
    return psutil.cpu_percent(interval=sample_s) / 100 * (psutil.cpu_count() or 1)


def run_demo(
    out: str | os.PathLike = "runs/demo",
    device: str = "auto",
    demo: DemoConfig = DemoConfig(),
    progress: bool = True,
    minutes: float | None = None,
) -> dict:
    """Make data, train, evaluate, detect; print and return the summary (see module docstring).
    `minutes`: the training budget on a CPU instead of the demo's (`yolo4 train --demo --time-budget`)."""
    check_time_budget(minutes)  # before any work
    if minutes is not None:
        demo = replace(demo, train_minutes=minutes, fp32_train_minutes=minutes)
    from yolo4.data.dataset import load_dataset
    from yolo4.data.shapes import ShapesConfig, make_shapes
    from yolo4.inference.detect import run_detect
    from yolo4.training.checkpoint import trained_network

    t_start = time.time()
    out = Path(out)
    dev = select_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads())
    shapes = ShapesConfig(seed=0, num_train=demo.num_train)  # the default difficulty and val split
    print(f"demo: making the shapes dataset ({shapes.num_train} train / {shapes.num_val} val images) ...")
    data = make_shapes(out / "data", shapes, progress=progress)
    t_data = time.time()

    cfg = demo.train_config(data, out / "train", dev, progress)
    if dev.type == "cpu" and autocast_dtype(cfg, dev) is None:
        print(
            f"demo: this CPU has no native bf16 (a float32 step costs ~4x): batch {cfg.batch}, the first "
            f"{cfg.small_img_epochs:.0%} of the epochs at {cfg.small_img_size} px and the rest at {cfg.img_size} px "
            "(not half and half), so that more of them fit in the budget"
        )
    result = train(cfg)
    t_train = time.time()

    # final evaluation of the best checkpoint on the whole val split
    model = trained_network(out / "train" / "best.pt")
    val_set = load_dataset(data, "val", progress=False)
    names = list(val_set.names)
    (out / "val").mkdir(parents=True, exist_ok=True)
    metrics = validate(model, val_set, names, demo.val_img_size, dev, progress=progress, plots_dir=out / "val")
    (out / "val" / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=1))
    (out / "val" / "per_class.txt").write_text(metrics.summary() + "\n\n" + metrics.table() + "\n")
    t_eval = time.time()

    # detection on held-out val images (never seen in training)
    sources = [str(p) for p in val_set.image_paths[: demo.detect_images]]
    run_detect(
        sources,
        model=model,
        names=names,
        img_size=demo.val_img_size,
        device=str(dev),
        out=out / "detect",
        progress=progress,
    )
    t_end = time.time()

    summary: dict[str, Any] = {
        "mAP50": float(metrics.map50),
        "mAP50-95": float(metrics.map),
        "best_epoch_val_mAP50": result.best_map50,
        "epochs": result.epochs,
        "curve_mAP50": [r.get("val/mAP50") for r in result.history],
        "seconds": {
            "data": t_data - t_start,
            "train": t_train - t_data,
            "eval": t_eval - t_train,
            "detect": t_end - t_eval,
            "total": t_end - t_start,
        },
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "demo": asdict(demo),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(metrics.summary())
    print(
        f"demo: {out}: mAP50 {summary['mAP50']:.3f}, mAP50-95 {summary['mAP50-95']:.3f} on {len(val_set)} val "
        f"images; {summary['seconds']['total'] / 60:.1f} min on {dev} "
        f"(data {summary['seconds']['data']:.0f}s, train {summary['seconds']['train']:.0f}s, "
        f"eval {summary['seconds']['eval']:.0f}s, detect {summary['seconds']['detect']:.0f}s)"
    )
    if cfg.time_budget_min is not None and result.epochs < min(cfg.epochs, demo.few_epochs):  # the budget decided
        print(few_epochs_hint(result.epochs, cfg.time_budget_min))
    return summary
