"""Darknet compatibility: cfg text, the layer list, the PyTorch module and .weights I/O.

model = yolo4.darknet.load("yolov4.cfg", "yolov4.weights")
heads = model(images)  # [(B, A*(5+C), H_i, W_i)] per [yolo] layer
"""

from __future__ import annotations

import os

from yolo4.darknet.cfg import format_cfg, parse_cfg, read_cfg, write_cfg
from yolo4.darknet.cmbn import CmBatchNorm2d, reset_cmbn
from yolo4.darknet.layers import LAYERS, NetOptions, NetworkSpec, YoloLayer
from yolo4.darknet.network import Darknet, infer_shapes
from yolo4.darknet.weights import load_weights, save_weights


def load(
    cfg_path: str | os.PathLike | NetworkSpec, weights_path: str | os.PathLike | None = None, upto: int | None = None
) -> Darknet:
    """Build the network of a .cfg file (or a NetworkSpec) and load darknet weights if given.

    The module is returned in eval mode. `upto=N` loads only layers 0..N-1 (backbone files).
    """
    spec = cfg_path if isinstance(cfg_path, NetworkSpec) else read_cfg(cfg_path)
    model = Darknet(spec)
    if weights_path is not None:
        load_weights(model, weights_path, upto=upto)
    return model.eval()


__all__ = [
    "LAYERS",
    "CmBatchNorm2d",
    "Darknet",
    "NetOptions",
    "NetworkSpec",
    "YoloLayer",
    "format_cfg",
    "infer_shapes",
    "load",
    "load_weights",
    "parse_cfg",
    "read_cfg",
    "reset_cmbn",
    "save_weights",
    "write_cfg",
]
