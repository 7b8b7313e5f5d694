"""Network pieces as small functions that emit darknet layers.

Every function returns a fresh `list[Layer]` (or one layer) that a builder appends to its
layer list; nothing here keeps state. Layer references follow darknet's `[route]` rules,
seen from the block being emitted:

    ref < 0   relative to the block's FIRST layer: -1 is the layer just before the block,
              whichever layer of the block uses it (the block shifts it as needed);
    ref >= 0  an absolute layer index (darknet cfgs use these for backbone taps).

So a builder writes `pan_downsample(256, source=p3 - len(layers), skip=p4 - len(layers))`
and gets exactly the `layers=-1,-16` an official cfg spells out.

Convolutions are darknet's: `pad=1` (padding = size // 2), batch-normalised, no bias; the
1x1 prediction convolution in front of each `[yolo]` layer is the only one with a bias.
"""

from __future__ import annotations

from collections.abc import Sequence

from yolo4.darknet.layers import (
    Convolutional,
    Layer,
    MaxPool,
    Route,
    Shortcut,
    Upsample,
    YoloLayer,
)

# ---------------------------------------------------------------- single layers


def conv(filters: int, size: int = 1, stride: int = 1, activation: str = "leaky") -> Convolutional:
    """A `[convolutional]` with batch norm: (C, H, W) -> (filters, H/stride, W/stride)."""
    return Convolutional(filters=filters, size=size, stride=stride, pad=1, batch_normalize=1, activation=activation)


def head_conv(num_anchors: int, num_classes: int, activation: str = "linear") -> Convolutional:
    """The 1x1 prediction conv (bias, no BN) feeding a `[yolo]` layer: A*(5+C) filters."""
    return Convolutional(
        filters=num_anchors * (5 + num_classes), size=1, stride=1, pad=1, batch_normalize=0, activation=activation
    )


def route(*layers: int, groups: int = 1, group_id: int = 0) -> Route:
    """A `[route]`: channel concat of `layers` (darknet refs), or chunk `group_id` of `groups`."""
    return Route(layers=list(layers), groups=groups, group_id=group_id)


def shortcut(from_: int = -3, activation: str = "linear") -> Shortcut:
    """A `[shortcut]`: previous output + output of `from_`."""
    return Shortcut(from_=[from_], activation=activation)


def maxpool(size: int, stride: int) -> MaxPool:
    """A `[maxpool]` with darknet's padding (size - 1, split before/after)."""
    return MaxPool(size=size, stride=stride)


def upsample(stride: int = 2) -> Upsample:
    """An `[upsample]`: nearest neighbour, (C, H, W) -> (C, H*stride, W*stride)."""
    return Upsample(stride=stride)


def yolo(mask: Sequence[int], anchors: Sequence[tuple[float, float]], num_classes: int, **settings) -> YoloLayer:
    """A `[yolo]` layer using `anchors[mask]`; `settings` are its other typed keys
    (scale_x_y, new_coords, iou_loss, ...) and `extra` (keys only darknet's trainer reads)."""
    return YoloLayer(
        mask=list(mask),
        anchors=[(float(w), float(h)) for w, h in anchors],
        classes=num_classes,
        num=len(anchors),
        **settings,
    )


def _at(ref: int, offset: int) -> int:
    """`ref` (relative to a block's first layer, or absolute) as seen from the block's layer `offset`."""
    return ref - offset if ref < 0 else ref


# ---------------------------------------------------------------- backbone pieces


def residual(filters: int, hidden: int, activation: str) -> list[Layer]:
    """Darknet residual unit: 1x1 conv to `hidden`, 3x3 conv back to `filters`, add the input.
    (filters, H, W) -> (filters, H, W); 3 layers."""
    return [conv(hidden, 1, 1, activation), conv(filters, 3, 1, activation), shortcut(-3)]


def darknet_stage(filters: int, n: int, activation: str) -> list[Layer]:
    """Darknet-53 stage: 3x3/2 downsampling conv then `n` residual units with filters/2
    bottlenecks. (C, H, W) -> (filters, H/2, W/2); 1 + 3n layers."""
    layers: list[Layer] = [conv(filters, 3, 2, activation)]
    for _ in range(n):
        layers += residual(filters, filters // 2, activation)
    return layers


def csp_stage(
    filters: int, n: int, activation: str, split: int | None = None, hidden: int | None = None
) -> list[Layer]:
    """CSPDarknet53 stage (Cross Stage Partial): downsample, then split into a 1x1 bypass and
    a 1x1 + `n` residual units path, concatenate both, and a 1x1 transition.

    (C, H, W) -> (filters, H/2, W/2); 3n + 7 layers. `split` (default filters/2) is the width
    of each part, `hidden` (default `split`) the residual bottleneck; YOLOv4's first stage
    uses split=filters, hidden=filters/2.
    """
    split = split or filters // 2
    hidden = hidden or split
    layers: list[Layer] = [
        conv(filters, 3, 2, activation),  # downsample
        conv(split, 1, 1, activation),  # part 1: bypass
        route(-2),  # part 2 starts again from the downsampled map
        conv(split, 1, 1, activation),
    ]
    for _ in range(n):
        layers += residual(split, hidden, activation)
    layers.append(conv(split, 1, 1, activation))
    layers.append(route(-1, -(3 * n + 4)))  # [part 2, part 1]
    layers.append(conv(filters, 1, 1, activation))  # transition
    return layers


def csp_tiny_stage(filters: int, activation: str) -> list[Layer]:
    """YOLOv4-tiny's CSP block: 3x3 conv, keep the second half of its channels, two 3x3
    convs (filters/2), concat them, 1x1 conv, concat with the full 3x3 output, 2x2 max-pool.
    (C, H, W) -> (2*filters, H/2, W/2); 8 layers. The 1x1 conv (offset 5) is the feature the
    upsampling path of the head reads."""
    half = filters // 2
    return [
        conv(filters, 3, 1, activation),
        route(-1, groups=2, group_id=1),
        conv(half, 3, 1, activation),
        conv(half, 3, 1, activation),
        route(-1, -2),
        conv(filters, 1, 1, activation),
        route(-6, -1),
        maxpool(2, 2),
    ]


# ---------------------------------------------------------------- necks


def conv_stack(filters: int, n: int, activation: str) -> list[Layer]:
    """`n` convs alternating 1x1 (`filters`) and 3x3 (2*filters), starting and (for odd n)
    ending with 1x1: YOLOv3's 5-conv detection block. (C, H, W) -> (filters or 2*filters, H, W)."""
    return [conv(filters, 1, 1, activation) if i % 2 == 0 else conv(2 * filters, 3, 1, activation) for i in range(n)]


def spp(sizes: Sequence[int] = (5, 9, 13)) -> list[Layer]:
    """Spatial Pyramid Pooling: stride-1 max-pools of every size over the input, concatenated
    largest first, then the input. (C, H, W) -> (C*(len(sizes)+1), H, W); 2*len(sizes) layers."""
    layers: list[Layer] = []
    for i, size in enumerate(sizes):
        if i:
            layers.append(route(-2 * i))  # back to the block's input
        layers.append(maxpool(size, 1))
    last = 2 * len(sizes) - 1  # offset of the concatenating route
    pools = [2 * i - last for i in reversed(range(len(sizes)))]
    layers.append(route(*pools, -1 - last))
    return layers


def csp_spp(filters: int, activation: str, pairs_after: int = 1, sizes: Sequence[int] = (5, 9, 13)) -> list[Layer]:
    """Scaled-YOLOv4's CSP-SPP: a 1x1 bypass, and a 1x1-3x3-1x1 + SPP + (1x1, 3x3) x
    `pairs_after` path, concatenated and fused by a 1x1. (C, H, W) -> (filters, H, W)."""
    layers: list[Layer] = [conv(filters, 1, 1, activation), route(-2)]
    layers += [conv(filters, 1, 1, activation), conv(filters, 3, 1, activation), conv(filters, 1, 1, activation)]
    layers += spp(sizes)
    for _ in range(pairs_after):
        layers += [conv(filters, 1, 1, activation), conv(filters, 3, 1, activation)]
    layers.append(route(-1, -len(layers)))  # [path, bypass (offset 0)]
    layers.append(conv(filters, 1, 1, activation))
    return layers


def csp_conv_stack(filters: int, pairs: int, activation: str) -> list[Layer]:
    """Scaled-YOLOv4's CSP version of `conv_stack`: 1x1 merge, then a 1x1 bypass and a path of
    (1x1, 3x3) x `pairs`, concatenated and fused by a 1x1. (C, H, W) -> (filters, H, W)."""
    layers: list[Layer] = [conv(filters, 1, 1, activation), conv(filters, 1, 1, activation), route(-2)]
    for _ in range(pairs):
        layers += [conv(filters, 1, 1, activation), conv(filters, 3, 1, activation)]
    layers.append(route(-1, -(2 * pairs + 2)))  # [path, bypass]
    layers.append(conv(filters, 1, 1, activation))
    return layers


def upsample_concat(filters: int, source: int, lateral: int, activation: str) -> list[Layer]:
    """YOLOv3 top-down step: from `source`, 1x1 conv, 2x upsample, concat with `lateral`.
    (C, H, W) -> (filters + C_lateral, 2H, 2W); 4 layers."""
    return [route(source), conv(filters, 1, 1, activation), upsample(2), route(-1, _at(lateral, 3))]


def pan_upsample(filters: int, lateral: int, activation: str) -> list[Layer]:
    """PAN top-down step (YOLOv4): 1x1 conv + 2x upsample of the previous output, 1x1 conv
    of `lateral`, concat [lateral, upsampled]. (C, H, W) -> (2*filters, 2H, 2W); 5 layers."""
    return [
        conv(filters, 1, 1, activation),
        upsample(2),
        route(_at(lateral, 2)),
        conv(filters, 1, 1, activation),
        route(-1, -3),
    ]


def pan_downsample(filters: int, source: int, skip: int, activation: str) -> list[Layer]:
    """PAN bottom-up step: from `source`, 3x3/2 conv, concat with `skip`.
    (C, H, W) -> (filters + C_skip, H/2, W/2); 3 layers."""
    return [route(source), conv(filters, 3, 2, activation), route(-1, _at(skip, 2))]


def yolo_head(filters: int, head: YoloLayer, activation: str, head_activation: str = "linear") -> list[Layer]:
    """Detection head: 3x3 conv to `filters`, the 1x1 prediction conv, the `[yolo]` layer.
    (C, H, W) -> (len(mask)*(5+classes), H, W); 3 layers."""
    return [conv(filters, 3, 1, activation), head_conv(len(head.mask), head.classes, head_activation), head]
