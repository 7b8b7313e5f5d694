"""Training on real photographs (the shared `kangaroo` set; slow, run with `-m slow`): fine-tuning
from a real darknet backbone, and convergence from scratch with the defaults."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from yolo4.training.config import TrainConfig
from yolo4.training.train import train


@pytest.mark.slow
def test_backbone_prefix_with_new_heads_trains_on_real_images(kangaroo, reference, tmp_path):
    """`--weights yolo-fastest-1.1.weights --weights-upto 109` (the backbone, COCO-trained) plus
    new one-class heads: the backbone tensors are the file's, and the loss falls."""
    from yolo4.darknet import Darknet, load_weights, parse_cfg

    cfg_path = reference / "models" / "yolo-fastest-1.1.cfg"
    weights = reference / "models" / "yolo-fastest-1.1.weights"
    out = tmp_path / "ft"
    cfg = TrainConfig(
        data=str(kangaroo),
        model=str(cfg_path),
        weights=str(weights),
        weights_upto=109,  # every layer before the first [maxpool] of the neck
        img_size=128,
        epochs=6,
        batch=8,
        max_train_images=16,
        max_val_images=4,
        lr=0.05,
        mosaic=0.0,
        device="cpu",
        progress=False,
        out=str(out),
        export=False,
        amp=False,
        dropblock=False,
    )
    result = train(cfg)
    losses = [r["train/loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.85 * losses[0], losses
    # the first convolution barely moved from the COCO weights (it would be random otherwise)
    ref = Darknet(parse_cfg(Path(cfg_path).read_text()))
    load_weights(ref, weights, upto=109)
    from yolo4.training.checkpoint import load_checkpoint

    trained = load_checkpoint(out / "last.pt")["model"]
    w0 = ref.state_dict()["blocks.0.conv.weight"]
    assert (trained["blocks.0.conv.weight"] - w0).abs().mean() < 0.2 * w0.abs().mean()


@pytest.mark.slow
@pytest.mark.xfail(
    reason="issue #15's target, not reached yet: on a loaded machine the defaults measured mAP50 0.11 at epoch 23 "
    "of 30 at 256 px (with the EMA freeze since fixed); kept as the acceptance check",
    strict=False,
)
def test_defaults_converge_on_kangaroo_from_scratch(kangaroo, tmp_path):
    """`yolo4 train --data kangaroo --model yolov4-tiny` with the defaults (320 px, 40 epochs):
    mAP50 above 0.5 from random weights (about 10 minutes on 2 idle cores)."""
    torch.manual_seed(0)
    cfg = TrainConfig(data=str(kangaroo), model="yolov4-tiny", img_size=320, epochs=40, out=str(tmp_path / "k"))
    result = train(cfg)
    assert result.best_map50 > 0.5, result.history
