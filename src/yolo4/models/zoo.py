"""The model zoo: the YOLOv3/YOLOv4 family written as Python builders.

    spec = build("yolov4")                                  # NetworkSpec, = darknet's yolov4.cfg
    spec = build("yolov4-tiny", num_classes=3, img_size=320)
    model = load_model("yolov4", "yolov4.weights")          # Darknet module, official weights
    model = load_model("my.cfg", "my.weights")

Each builder `name(num_classes=80, anchors=None, activation=None, img_size=None)` assembles
the network from the pieces in `blocks.py` (CSP stages, SPP, PAN steps, heads). For 80
classes the result is layer for layer the official AlexeyAB/darknet cfg of the same name
(layer types, conv shapes and activations, routes, [yolo] settings, the [net] training
recipe), so official `.weights` files load into it. Arguments:

    num_classes  head convs get len(mask)*(5+C) filters and [yolo] layers classes=C;
    anchors      all of the model's anchors as (w, h) pairs in input pixels (same count);
    activation   None: the official ones; "mish", "leaky" or "silu" (darknet's "swish")
                 replaces every backbone and neck activation (heads stay linear/logistic);
    img_size     the [net] input size: an int or (height, width), multiples of 32.

`resolve_spec` and `load_model` are the one place that turns the CLI's `MODEL` argument (a
zoo name or a .cfg path) into a spec or a module.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from yolo4.darknet.cfg import read_cfg
from yolo4.darknet.layers import (
    Convolutional,
    Layer,
    NetOptions,
    NetworkSpec,
    YoloLayer,
)
from yolo4.darknet.network import Darknet, infer_shapes
from yolo4.errors import CfgError
from yolo4.models.blocks import (
    conv,
    conv_stack,
    csp_conv_stack,
    csp_spp,
    csp_stage,
    csp_tiny_stage,
    darknet_stage,
    maxpool,
    pan_downsample,
    pan_upsample,
    spp,
    upsample_concat,
    yolo,
    yolo_head,
)

Anchors = Sequence[tuple[float, float]]
ImgSize = int | tuple[int, int] | None

# (w, h) in input pixels, as in the official cfgs
YOLOV3_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))
YOLOV4_ANCHORS = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146), (142, 110), (192, 243), (459, 401))

# user-facing activation name -> darknet's
ACTIVATION_NAMES = {"mish": "mish", "leaky": "leaky", "silu": "swish", "swish": "swish"}


# ---------------------------------------------------------------- argument handling


def _activation(requested: str | None, official: str) -> str:
    if requested is None:
        return official
    try:
        return ACTIVATION_NAMES[requested]
    except KeyError:
        raise CfgError(f"activation '{requested}' is not one of {', '.join(ACTIVATION_NAMES)}") from None


def _anchors(requested: Anchors | None, official: Anchors, model: str) -> list[tuple[float, float]]:
    anchors = official if requested is None else requested
    out = [(float(w), float(h)) for w, h in anchors]
    if len(out) != len(official):
        raise CfgError(f"{model}: needs {len(official)} anchors (w, h), got {len(out)}")
    if any(w <= 0 or h <= 0 for w, h in out):
        raise CfgError(f"{model}: anchors must be positive, got {out}")
    return out


def _input_hw(img_size: ImgSize, official: int, model: str, stride: int = 32) -> tuple[int, int]:
    if img_size is None:
        return official, official
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise CfgError(f"{model}: input size {h}x{w} must be a positive multiple of {stride}")
    return h, w


def _net(input_hw: tuple[int, int], letter_box: bool = False, **recipe: str) -> NetOptions:
    """[net]: input geometry, darknet's default augmentation and the given training recipe."""
    options = {
        "batch": "64",
        "subdivisions": "8",
        "momentum": "0.949",
        "decay": "0.0005",
        "angle": "0",
        "saturation": "1.5",
        "exposure": "1.5",
        "hue": ".1",
        "learning_rate": "0.001",
        "burn_in": "1000",
        "max_batches": "500500",
        "policy": "steps",
        "steps": "400000,450000",
        "scales": ".1,.1",
    }
    options.update(recipe)
    return NetOptions(width=input_hw[1], height=input_hw[0], channels=3, letter_box=letter_box, options=options)


def _check(spec: NetworkSpec) -> NetworkSpec:
    """Shape-check a freshly built spec (a builder bug must fail here, not in a user's run)."""
    infer_shapes(spec)
    return spec


# ---------------------------------------------------------------- YOLOv3


def yolov3(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv3 (Darknet-53 backbone, 3-scale FPN), = darknet's yolov3.cfg for 80 classes."""
    act = _activation(activation, "leaky")
    all_anchors = _anchors(anchors, YOLOV3_ANCHORS, "yolov3")
    settings = dict(jitter=0.3, ignore_thresh=0.7, truth_thresh=1.0, random=1.0)

    def head(mask):
        return yolo(mask, all_anchors, num_classes, **settings)

    layers: list[Layer] = [conv(32, 3, 1, act)]
    layers += darknet_stage(64, 1, act)
    layers += darknet_stage(128, 2, act)
    layers += darknet_stage(256, 8, act)
    c3 = len(layers) - 1  # stride 8
    layers += darknet_stage(512, 8, act)
    c4 = len(layers) - 1  # stride 16
    layers += darknet_stage(1024, 4, act)
    layers += conv_stack(512, 5, act)
    p5 = len(layers) - 1
    layers += yolo_head(1024, head([6, 7, 8]), act)
    layers += upsample_concat(256, p5 - len(layers), c4, act)
    layers += conv_stack(256, 5, act)
    p4 = len(layers) - 1
    layers += yolo_head(512, head([3, 4, 5]), act)
    layers += upsample_concat(128, p4 - len(layers), c3, act)
    layers += conv_stack(128, 5, act)
    layers += yolo_head(256, head([0, 1, 2]), act)
    # the official cfg ships its testing batch (training: batch=64, subdivisions=16)
    net = _net(_input_hw(img_size, 416, "yolov3"), batch="1", subdivisions="1", momentum="0.9", max_batches="500200")
    return _check(NetworkSpec(net, layers, source="zoo:yolov3"))


def yolov3_tiny(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv3-tiny (7 convs + max-pools, 2 scales), = darknet's yolov3-tiny.cfg for 80 classes."""
    act = _activation(activation, "leaky")
    all_anchors = _anchors(anchors, TINY_ANCHORS, "yolov3-tiny")
    settings = dict(jitter=0.3, ignore_thresh=0.7, truth_thresh=1.0, random=1.0)

    layers: list[Layer] = []
    for filters in (16, 32, 64, 128, 256):
        layers += [conv(filters, 3, 1, act), maxpool(2, 2)]
    c4 = len(layers) - 2  # the 256-filter conv, stride 16
    layers += [conv(512, 3, 1, act), maxpool(2, 1), conv(1024, 3, 1, act), conv(256, 1, 1, act)]
    p5 = len(layers) - 1
    layers += yolo_head(512, yolo([3, 4, 5], all_anchors, num_classes, **settings), act)
    layers += upsample_concat(128, p5 - len(layers), c4, act)
    layers += yolo_head(256, yolo([0, 1, 2], all_anchors, num_classes, **settings), act)
    net = _net(
        _input_hw(img_size, 416, "yolov3-tiny"), batch="1", subdivisions="1", momentum="0.9", max_batches="500200"
    )
    return _check(NetworkSpec(net, layers, source="zoo:yolov3-tiny"))


# ---------------------------------------------------------------- YOLOv4


def yolov4(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv4 (CSPDarknet53 with mish, SPP, PAN with leaky), = darknet's yolov4.cfg."""
    act = _activation(activation, "mish")  # backbone
    neck = _activation(activation, "leaky")
    all_anchors = _anchors(anchors, YOLOV4_ANCHORS, "yolov4")
    settings = dict(
        jitter=0.3,
        ignore_thresh=0.7,
        truth_thresh=1.0,
        iou_thresh=0.213,
        cls_normalizer=1.0,
        iou_normalizer=0.07,
        iou_loss="ciou",
        nms_kind="greedynms",
        beta_nms=0.6,
        max_delta=5.0,
    )

    def head(mask, scale_x_y, random=0.0):
        return yolo(mask, all_anchors, num_classes, scale_x_y=scale_x_y, random=random, **settings)

    layers: list[Layer] = [conv(32, 3, 1, act)]
    layers += csp_stage(64, 1, act, split=64, hidden=32)
    layers += csp_stage(128, 2, act)
    layers += csp_stage(256, 8, act)
    c3 = len(layers) - 1  # 54, stride 8
    layers += csp_stage(512, 8, act)
    c4 = len(layers) - 1  # 85, stride 16
    layers += csp_stage(1024, 4, act)
    layers += conv_stack(512, 3, neck) + spp() + conv_stack(512, 3, neck)
    p5 = len(layers) - 1  # 116
    layers += pan_upsample(256, c4, neck) + conv_stack(256, 5, neck)
    p4 = len(layers) - 1  # 126
    layers += pan_upsample(128, c3, neck) + conv_stack(128, 5, neck)
    p3 = len(layers) - 1  # 136
    layers += yolo_head(256, head([0, 1, 2], 1.2), neck)
    layers += pan_downsample(256, p3 - len(layers), p4 - len(layers), neck) + conv_stack(256, 5, neck)
    n4 = len(layers) - 1
    layers += yolo_head(512, head([3, 4, 5], 1.1), neck)
    layers += pan_downsample(512, n4 - len(layers), p5 - len(layers), neck) + conv_stack(512, 5, neck)
    layers += yolo_head(1024, head([6, 7, 8], 1.05, random=1.0), neck)
    net = _net(_input_hw(img_size, 608, "yolov4"), learning_rate="0.0013", mosaic="1")
    return _check(NetworkSpec(net, layers, source="zoo:yolov4"))


def yolov4_tiny(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv4-tiny (3 CSP-tiny blocks, 2 scales), = darknet's yolov4-tiny.cfg."""
    act = _activation(activation, "leaky")
    all_anchors = _anchors(anchors, TINY_ANCHORS, "yolov4-tiny")
    settings = dict(
        jitter=0.3,
        scale_x_y=1.05,
        cls_normalizer=1.0,
        iou_normalizer=0.07,
        iou_loss="ciou",
        ignore_thresh=0.7,
        truth_thresh=1.0,
        random=0.0,
        resize=1.5,
        nms_kind="greedynms",
        beta_nms=0.6,
    )

    layers: list[Layer] = [conv(32, 3, 2, act), conv(64, 3, 2, act)]
    layers += csp_tiny_stage(64, act)
    layers += csp_tiny_stage(128, act)
    layers += csp_tiny_stage(256, act)
    c4 = len(layers) - 3  # the stage's 1x1 conv (23), stride 16
    layers += [conv(512, 3, 1, act), conv(256, 1, 1, act)]
    p5 = len(layers) - 1
    layers += yolo_head(512, yolo([3, 4, 5], all_anchors, num_classes, **settings), act)
    layers += upsample_concat(128, p5 - len(layers), c4, act)
    # mask 1,2,3 (not 0,1,2) is the official file's choice; the weights were trained with it
    layers += yolo_head(256, yolo([1, 2, 3], all_anchors, num_classes, **settings), act)
    net = _net(
        _input_hw(img_size, 416, "yolov4-tiny"),
        subdivisions="1",
        momentum="0.9",
        learning_rate="0.00261",
        max_batches="2000200",
        steps="1600000,1800000",
    )
    return _check(NetworkSpec(net, layers, source="zoo:yolov4-tiny"))


def _scaled_yolov4(
    name: str,
    width: Sequence[int],
    stage_depths: Sequence[int],
    spp_pairs: int,
    pan_pairs: int,
    num_classes: int,
    anchors: Anchors | None,
    act: str,
    input_hw: tuple[int, int],
    p3_extra: dict[str, str],
    **recipe: str,
) -> NetworkSpec:
    """Scaled-YOLOv4 (CSP everywhere: CSPDarknet backbone, CSP-SPP, CSP-PAN, logistic heads
    with new_coords). `width` = filters of the stem's stride-2 conv and the five stages."""
    all_anchors = _anchors(anchors, YOLOV4_ANCHORS, name)
    settings = dict(
        jitter=0.1,
        scale_x_y=2.0,
        ignore_thresh=0.7,
        truth_thresh=1.0,
        resize=1.5,
        iou_thresh=0.2,
        iou_normalizer=0.05,
        cls_normalizer=0.5,
        iou_loss="ciou",
        nms_kind="diounms",
        beta_nms=0.6,
        new_coords=1,
    )

    def head(mask, obj_normalizer, max_delta, objectness_smooth):
        return yolo(
            mask,
            all_anchors,
            num_classes,
            obj_normalizer=obj_normalizer,
            max_delta=max_delta,
            extra={"objectness_smooth": objectness_smooth},
            **settings,
        )

    stem, *stages = width
    layers: list[Layer] = [conv(32, 3, 1, act)]
    layers += darknet_stage(stem, 1, act)
    taps = []
    for filters, n in zip(stages, stage_depths):
        layers += csp_stage(filters, n, act)
        taps.append(len(layers) - 1)
    c3, c4 = taps[1], taps[2]  # strides 8 and 16
    f3, f4, f5 = stages[1] // 2, stages[2] // 2, stages[3] // 2  # neck widths per scale
    layers += csp_spp(f5, act, pairs_after=spp_pairs)
    p5 = len(layers) - 1
    layers += pan_upsample(f4, c4, act) + csp_conv_stack(f4, pan_pairs, act)
    p4 = len(layers) - 1
    layers += pan_upsample(f3, c3, act) + csp_conv_stack(f3, pan_pairs, act)
    p3 = len(layers) - 1
    if p3_extra:  # e.g. yolov4x-mish's stopbackward, a training key darknet reads on this conv
        layers[p3] = dataclasses.replace(layers[p3], extra={**layers[p3].extra, **p3_extra})
    layers += yolo_head(2 * f3, head([0, 1, 2], 4.0, 5.0, "0"), act, head_activation="logistic")
    layers += pan_downsample(f4, p3 - len(layers), p4 - len(layers), act) + csp_conv_stack(f4, pan_pairs, act)
    n4 = len(layers) - 1
    layers += yolo_head(2 * f4, head([3, 4, 5], 1.0, 5.0, "1"), act, head_activation="logistic")
    layers += pan_downsample(f5, n4 - len(layers), p5 - len(layers), act) + csp_conv_stack(f5, pan_pairs, act)
    layers += yolo_head(2 * f5, head([6, 7, 8], 0.4, 2.0, "1"), act, head_activation="logistic")
    net = _net(input_hw, letter_box=True, mosaic="1", **recipe)
    return _check(NetworkSpec(net, layers, source=f"zoo:{name}"))


def yolov4_csp(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv4-CSP (Scaled-YOLOv4, mish everywhere), = darknet's yolov4-csp.cfg."""
    return _scaled_yolov4(
        "yolov4-csp",
        (64, 128, 256, 512, 1024),
        (2, 8, 8, 4),
        spp_pairs=1,
        pan_pairs=2,
        num_classes=num_classes,
        anchors=anchors,
        act=_activation(activation, "mish"),
        input_hw=_input_hw(img_size, 512, "yolov4-csp"),
        p3_extra={},
        ema_alpha="0.9998",
    )


def yolov4_csp_leaky(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv4-CSP with every mish replaced by leaky at 448x448: the int8-friendly model
    (leaky quantises well, mish does not). No official weights; train it here."""
    spec = yolov4_csp(num_classes, anchors, activation or "leaky", img_size or 448)
    spec.source = "zoo:yolov4-csp-leaky"
    return spec


def yolov4x_mish(
    num_classes: int = 80, anchors: Anchors | None = None, activation: str | None = None, img_size: ImgSize = None
) -> NetworkSpec:
    """YOLOv4x-mish (Scaled-YOLOv4, 1.25x wider and deeper than CSP), = darknet's yolov4x-mish.cfg."""
    return _scaled_yolov4(
        "yolov4x-mish",
        (80, 160, 320, 640, 1280),
        (3, 10, 10, 5),
        spp_pairs=2,
        pan_pairs=3,
        num_classes=num_classes,
        anchors=anchors,
        act=_activation(activation, "mish"),
        input_hw=_input_hw(img_size, 640, "yolov4x-mish"),
        p3_extra={"stopbackward": "800"},
    )


# ---------------------------------------------------------------- registry

Builder = Callable[..., NetworkSpec]

ZOO: dict[str, Builder] = {
    "yolov3": yolov3,
    "yolov3-tiny": yolov3_tiny,
    "yolov4": yolov4,
    "yolov4-tiny": yolov4_tiny,
    "yolov4-csp": yolov4_csp,
    "yolov4-csp-leaky": yolov4_csp_leaky,
    "yolov4x-mish": yolov4x_mish,
}


def build(name: str, **kw) -> NetworkSpec:
    """The zoo model `name` (see `ZOO`); `kw` are the builder's arguments."""
    try:
        builder = ZOO[name]
    except KeyError:
        raise CfgError(f"unknown zoo model '{name}' (known: {', '.join(ZOO)})") from None
    return builder(**kw)


def set_num_classes(spec: NetworkSpec, num_classes: int) -> NetworkSpec:
    """A copy of `spec` whose [yolo] layers predict `num_classes` classes: each one's
    classes key and the filters of the [convolutional] that feeds it (A*(5+C))."""
    if num_classes <= 0:
        raise CfgError(f"{spec.source}: num_classes must be positive, got {num_classes}")
    out = copy.deepcopy(spec)
    for i, layer in enumerate(out.layers):
        if not isinstance(layer, YoloLayer):
            continue
        feeder = out.layers[i - 1] if i else None
        if not isinstance(feeder, Convolutional):
            raise CfgError(f"{spec.where(i)}: [yolo] is not fed by a [convolutional], cannot change its classes")
        layer.classes = num_classes
        feeder.filters = layer.channels
    return out


def set_input_size(spec: NetworkSpec, img_size: int | tuple[int, int]) -> NetworkSpec:
    """A copy of `spec` with [net] width/height = `img_size` (int or (height, width))."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if h <= 0 or w <= 0:
        raise CfgError(f"{spec.source}: input size must be positive, got {h}x{w}")
    out = copy.deepcopy(spec)
    out.net.height, out.net.width = h, w
    return out


def resolve_spec(model: str | os.PathLike, num_classes: int | None = None, img_size: ImgSize = None) -> NetworkSpec:
    """A zoo name or a darknet .cfg path -> NetworkSpec.

    For a cfg, `num_classes` and `img_size` (when given) override what the file says.
    Raises CfgError naming the zoo models when `model` is neither.
    """
    text = os.fspath(model)
    if text in ZOO and not isinstance(model, Path):
        return build(text, num_classes=80 if num_classes is None else num_classes, img_size=img_size)
    path = Path(text)
    if path.suffix == ".cfg" or path.is_file():
        spec = read_cfg(path)
        if num_classes is not None and any(y.classes != num_classes for y in spec.yolo_layers):
            spec = set_num_classes(spec, num_classes)
        if img_size is not None:
            spec = set_input_size(spec, img_size)
        return spec
    raise CfgError(f"'{text}' is neither a zoo model ({', '.join(ZOO)}) nor a .cfg file")


def load_model(
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    img_size: ImgSize = None,
    upto: int | None = None,
) -> Darknet:
    """`--model NAME|CFG [--weights W]` -> a `Darknet` module in eval mode.

    Args:
        model: a zoo name or a .cfg path (see `resolve_spec`).
        weights: darknet .weights to load, or None for random initialisation.
        upto: load only layers 0..upto-1 from `weights` (backbone files such as yolov4.conv.137).
    Returns:
        Darknet; called on (B, 3, H, W) in [0, 1] it returns [(B, A*(5+C), H_i, W_i)] per [yolo].
    """
    from yolo4.darknet import load

    return load(resolve_spec(model, num_classes=num_classes, img_size=img_size), weights, upto=upto)
