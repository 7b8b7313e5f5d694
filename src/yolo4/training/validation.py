"""Validation during training: precise BN (BatchNorm statistics recomputed under the current
weights) and the COCO metrics of a model on a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence

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
            x = x.to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
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

    det = Detector(model, names=list(names), img_size=img_size, postprocess=postprocess, device=device)
    return evaluate(det, dataset, batch_size=batch_size, progress=progress, plots_dir=plots_dir)
