"""Validation during training: precise BN (BatchNorm statistics recomputed under the current
weights) and the COCO metrics of a model on a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from yolo4.darknet.cmbn import reset_cmbn
from yolo4.ops.nms import VAL_POSTPROCESS, PostprocessConfig


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches, amp_dtype: torch.dtype | None = None) -> int:
    """Precise BN (as detectron2's hook): replace every BatchNorm's running mean/var by their
    average over `batches` (an iterable of Tensor[B, 3, H, W]) under the current weights. Short
    runs need it: darknet's BN momentum (0.03) leaves the running statistics far behind the
    weights. Only BN layers run in train mode (dropout stays off). `amp_dtype`: the training's
    autocast dtype (the statistics are then those of the network as it trains). Returns the
    batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    n = 0
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        for x in batches:
            reset_cmbn(model)  # CmBN layers: each batch's own statistics, as plain BN
            x = x.to(device).contiguous(memory_format=torch.channels_last)  # as training runs
            model(x)
            n += 1
    reset_cmbn(model)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return n


def validate(
    model: nn.Module,
    dataset,
    names: Sequence[str],
    img_size: int,
    device: torch.device,
    postprocess: PostprocessConfig = VAL_POSTPROCESS,
    batch_size: int = 32,
    progress: bool = False,
    plots_dir: str | os.PathLike | None = None,
):
    """COCO metrics of `model` (a Darknet, left in eval mode) on `dataset`, post-processed as
    `yolo4 val` does by default (`VAL_POSTPROCESS`: conf 0.001, NMS 0.6, every class > conf)."""
    from yolo4.evaluation.evaluate import evaluate
    from yolo4.inference.detector import Detector
    from yolo4.inference.fastpath import SpeedConfig

    # the fast path without compiling: a new compile every epoch would cost more than it saves
    speed = SpeedConfig.for_device(device).replace(compile="off")
    det = Detector(model, names=list(names), img_size=img_size, postprocess=postprocess, device=device, speed=speed)
    return evaluate(det, dataset, batch_size=batch_size, progress=progress, plots_dir=plots_dir)


def readable_subset(dataset, workers: int | None = None) -> tuple[Any, list[str]]:
    """`dataset` without the images that cannot be decoded (a truncated download, say), which
    training skips too, so that validation scores the rest instead of stopping the run; and one
    problem line per image left out. Decodes every image once, in threads."""
    from concurrent.futures import ThreadPoolExecutor

    from yolo4.errors import DataError

    def bad(i: int) -> str | None:
        try:
            dataset.load(i)
            return None
        except DataError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(bad, range(len(dataset))))
    if not any(problems):
        return dataset, []
    return dataset.subset([i for i, p in enumerate(problems) if p is None]), [p for p in problems if p]
