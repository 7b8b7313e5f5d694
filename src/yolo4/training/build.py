"""Turning a `TrainConfig` into the objects a training run needs: the device, the network
(k-means anchors, pretrained weights, fresh heads and their bias priors), the optimiser and its
parameter groups, the augmentation settings, and the switches the loop flips on the model
(frozen layers, DropBlock rate, autocast dtype)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from yolo4.errors import Yolo4Error
from yolo4.inference.device import native_bf16
from yolo4.inference.device import select_device as select_device  # the one device rule, re-exported
from yolo4.training.anchors import check_anchors, set_kmeans_anchors
from yolo4.training.anchors import kmeans_anchors as kmeans_anchors  # re-exported
from yolo4.training.anchors import train_box_sizes as train_box_sizes  # re-exported
from yolo4.training.config import TrainConfig, resolved
from yolo4.training.ema import unwrap

if TYPE_CHECKING:
    from yolo4.darknet import Darknet


def make_loss(cfg: TrainConfig, model: nn.Module):
    """The YoloLoss of `model`'s [yolo] heads with the config's overrides of their cfg keys."""
    from yolo4.ops.losses import LossOverrides, YoloLoss

    return YoloLoss(
        cast("Darknet", unwrap(model)).yolo_layers,
        overrides=LossOverrides(
            iou_loss=cfg.iou_loss,
            iou_thresh=cfg.iou_thresh,
            ignore_thresh=cfg.ignore_thresh,
            label_smooth_eps=cfg.label_smoothing,
            iou_normalizer=cfg.iou_normalizer,
            cls_normalizer=cfg.cls_normalizer,
            obj_normalizer=cfg.obj_normalizer,
            scale_x_y=cfg.scale_x_y,
        ),
        neighbor_cells=bool(cfg.neighbor_cells),
        iou_objectness=cfg.iou_objectness,
    )


def build_model(cfg: TrainConfig, names: Sequence[str], train_wh: np.ndarray | None = None) -> tuple[nn.Module, bool]:
    """The network for `cfg`: from scratch, full darknet weights, or a backbone prefix.

    When the dataset's class count differs from the cfg's, only the head convolutions (the ones
    feeding a [yolo] layer) are re-created; every other tensor keeps the loaded values.
    Returns:
        (Darknet in train mode, whether the head layers were freshly initialised).
    """
    from yolo4.darknet import Darknet, load_weights
    from yolo4.darknet.layers import Convolutional
    from yolo4.models.zoo import resolve_spec, set_num_classes

    nc = len(names)
    spec = resolve_spec(cfg.model, num_classes=None, img_size=cfg.img_size)
    if cfg.cmbn:
        for layer in spec.layers:
            if isinstance(layer, Convolutional) and layer.batch_normalize:
                layer.batch_normalize = 2  # CmBatchNorm2d; plain BN in eval mode and in exported cfgs
    if cfg.anchors not in ("auto", "cfg", "kmeans"):
        raise Yolo4Error(f"anchors={cfg.anchors!r}: choose auto, cfg or kmeans")
    kmeans = cfg.anchors == "kmeans"
    if cfg.anchors == "auto" and train_wh is not None:  # (a training run decides this before, with the weights)
        kmeans = check_anchors(spec, train_wh, cfg.img_size, cfg.seed).use_kmeans
    if kmeans:
        if train_wh is None:
            raise Yolo4Error("anchors=kmeans needs the training boxes")
        set_kmeans_anchors(spec, train_wh, cfg.img_size, cfg.seed)
    if cfg.scale_x_y is not None:  # decoding changes: it goes into the spec (and the exported cfg)
        for y in spec.yolo_layers:
            y.scale_x_y = float(cfg.scale_x_y)
    if cfg.weights is None:
        spec = set_num_classes(spec, nc) if spec.yolo_layers[0].classes != nc else spec
        return Darknet(spec).train(), True
    base = Darknet(spec)
    load_weights(base, cfg.weights, upto=cfg.weights_upto)
    if all(y.classes == nc for y in spec.yolo_layers):
        return base.train(), cfg.weights_upto is not None
    model = Darknet(set_num_classes(spec, nc))
    own = model.state_dict()
    own.update({k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape})
    model.load_state_dict(own)
    return model.train(), True


def init_head_biases(model: nn.Module, img_hw: tuple[int, int]) -> None:
    """Priors for freshly initialised heads: objectness ~ 8 objects per image spread over the
    head's cells, classes ~ 0.6 / C, on the logits (a new_coords head's conv before its logistic).
    Speeds up training from scratch."""
    net = cast("Darknet", unwrap(model))
    for idx, layer in zip(net.head_indices, net.yolo_layers):
        conv = cast(nn.Conv2d, net.blocks[idx - 1].conv)
        if conv.bias is None:
            continue
        na, nc = len(layer.mask), layer.classes
        with torch.no_grad():
            b = conv.bias.view(na, 5 + nc)
            b[:, 4] += math.log(8 / max(_head_cells(net, idx, img_hw), 1) / len(net.yolo_layers))
            b[:, 5:] += math.log(0.6 / max(nc - 0.99, 0.01))


def _head_cells(net: Darknet, idx: int, img_hw: tuple[int, int]) -> int:
    from yolo4.darknet import infer_shapes

    info = infer_shapes(net.spec, img_hw)[idx]
    return info.out_chw[1] * info.out_chw[2]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """SGD groups: weight decay on conv/linear weights only; BN weights and all biases without."""
    decay, no_decay = [], []
    for m in unwrap(model).modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "weight" and not isinstance(m, nn.modules.batchnorm._BatchNorm):
                decay.append(p)
            else:
                no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over `param_groups` (no weight decay on BN and biases).
    On CUDA the fused implementation (one kernel for every parameter; GradScaler-aware), else
    PyTorch's default (foreach on the CPU)."""
    groups = param_groups(model, cfg.weight_decay)
    lr = resolved(cfg.lr, "lr")  # (the schedule hook sets each step's value)
    fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) and groups else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999), **fused)
    raise Yolo4Error(f"optimizer={cfg.optimizer!r}: choose sgd or adamw")


def freeze_layers(model: nn.Module, n: int) -> None:
    """Layers 0..n-1: no gradients, BatchNorm in eval mode (call after every model.train())."""
    net = cast("Darknet", unwrap(model))
    for block in list(net.blocks)[:n]:
        for p in block.parameters():
            p.requires_grad_(False)
        block.eval()


def set_drop_scale(model: nn.Module, scale: float) -> None:
    """DropBlock schedule: every [dropout] layer's rate = its cfg probability * scale."""
    from yolo4.darknet.network import DropoutDarknet

    for m in unwrap(model).modules():
        if isinstance(m, DropoutDarknet):
            m.drop_scale = float(scale)


def augment_config(cfg: TrainConfig, final_epochs: bool = False):
    from yolo4.data.augment import AugmentConfig

    mix = 0.0 if final_epochs else None
    return AugmentConfig(
        mosaic=cfg.mosaic if mix is None else 0.0,
        mixup=cfg.mixup if mix is None else 0.0,
        cutmix=cfg.cutmix if mix is None else 0.0,
        jitter=cfg.jitter,
        scale=(cfg.scale_min, cfg.scale_max),
        hue=cfg.hue,
        saturation=cfg.saturation,
        exposure=cfg.exposure,
        flip=cfg.flip,
        letterbox=False,
    )


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision for the forward pass: float16 on CUDA (with a GradScaler), bfloat16 on
    CPUs whose oneDNN has native bf16 kernels (about 2x faster there; no scaler needed), else None."""
    if not cfg.amp or cfg.qat:  # fake int8 rounding in bf16/fp16 would not be the deployed int8
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and native_bf16():
        return torch.bfloat16
    return None
