"""`--format darknet`: the network as a darknet .cfg + .weights pair, which darknet itself and
OpenCV DNN (`cv2.dnn.readNetFromDarknet`) load with the same outputs as PyTorch.

    cfg_path, weights_path = export_darknet(model, "out/model.cfg", img_size=(416, 416))

The cfg is `yolo4.darknet.format_cfg` of the model's spec (its [net] size set to the
exported size, CmBN's batch_normalize=2 written as 1: see `bn_as_one`); the weights are
`yolo4.darknet.save_weights` (darknet's layout: header, then per conv biases / BN scales,
means, variances, then weights).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from yolo4.darknet import Darknet, NetworkSpec, save_weights, write_cfg
from yolo4.darknet.layers import Convolutional
from yolo4.errors import ExportError
from yolo4.export.common import exported_spec

# What OpenCV DNN's darknet importer understands (its darknet_io.cpp); other activations
# in a cfg make readNetFromDarknet fail.
OPENCV_ACTIVATIONS = frozenset({"linear", "leaky", "mish", "swish", "logistic", "relu", "tanh"})


def opencv_problems(model: Darknet) -> list[str]:
    """Reasons OpenCV DNN could not load this network as darknet (empty when it can)."""
    problems = []
    for i, layer in enumerate(model.spec.layers):
        act = getattr(layer, "activation", None)
        if act is not None and act not in OPENCV_ACTIVATIONS and layer.KIND != "yolo":
            problems.append(
                f"{model.spec.where(i)}: activation '{act}' (OpenCV DNN knows {', '.join(sorted(OPENCV_ACTIVATIONS))})"
            )
    return problems


def bn_as_one(spec: NetworkSpec) -> NetworkSpec:
    """A copy of `spec` whose [convolutional] layers say batch_normalize=1 wherever BN is on.

    OpenCV's reader takes BN only for `batch_normalize == 1`; at 2 (CmBN, training-only) it
    would read the weights as bias + conv and misalign every later layer.
    """
    layers = [
        dataclasses.replace(layer, batch_normalize=1)
        if isinstance(layer, Convolutional) and layer.batch_normalize not in (0, 1)
        else layer
        for layer in spec.layers
    ]
    return dataclasses.replace(spec, layers=layers)


def export_darknet(
    model: Darknet, cfg_path: str | os.PathLike, img_size: tuple[int, int] | None = None
) -> tuple[Path, Path]:
    """Write `<cfg_path>` and the matching `.weights` beside it (same stem).

    Args:
        model: a Darknet module (not modified).
        img_size: (height, width) written to [net]; None keeps the model's.
    Returns:
        (cfg path, weights path).
    """
    cfg_path = Path(cfg_path)
    if cfg_path.suffix.lower() == ".weights":
        raise ExportError(f"{cfg_path}: give the .cfg path for --format darknet (the .weights is written beside it)")
    if cfg_path.suffix.lower() != ".cfg":
        cfg_path = cfg_path.with_suffix(".cfg")
    weights_path = cfg_path.with_suffix(".weights")
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    write_cfg(bn_as_one(exported_spec(model, img_size)), cfg_path)  # inference is the same
    save_weights(model, weights_path)
    return cfg_path, weights_path
