"""Box formats and the decoding of darknet `[yolo]` heads.

Boxes are `xyxy` float tensors `(..., 4)` in network-input pixels unless a name says
otherwise (`boxes_cxcywh`, `boxes_xywh`). IoU variants that torchvision already has
(`box_iou`, `distance_box_iou`, ...) are used from `torchvision.ops`; only the DIoU-NMS
criterion with the paper's beta lives here.

Decoding matches darknet's `forward_yolo_layer` + `get_yolo_box` and OpenCV's region
layer exactly:

    classic (new_coords=0)   bx = (sigmoid(tx) * s - (s - 1) / 2 + cx) * stride_w
                             bw = exp(tw) * anchor_w
                             obj, cls = sigmoid(to), sigmoid(tc)
    new_coords=1             bx = (tx * s - (s - 1) / 2 + cx) * stride_w
                             bw = (2 * tw) ** 2 * anchor_w
                             obj, cls = to, tc    (the feeding conv is already logistic)

with `s = scale_x_y`, `stride = input / grid`, anchors in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor
from torchvision.ops import box_iou


class HeadSpec(Protocol):
    """What decoding needs from a `[yolo]` layer (`yolo4.darknet.layers.YoloLayer` has it)."""

    classes: int
    scale_x_y: float
    new_coords: int

    @property
    def head_anchors(self) -> list[tuple[float, float]]: ...


class DecodedHeads(NamedTuple):
    """Decoded detections of a batch, before confidence filtering and NMS.

    boxes Tensor[B, N, 4] xyxy input pixels, objectness Tensor[B, N], class_probs Tensor[B, N, C].
    """

    boxes: Tensor
    objectness: Tensor
    class_probs: Tensor


# ------------------------------------------------------------------ formats
def cxcywh_to_xyxy(boxes_cxcywh: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2). Args: Tensor[..., 4]. Returns: Tensor[..., 4]."""
    cxcy, wh = boxes_cxcywh[..., :2], boxes_cxcywh[..., 2:4]
    return torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h). Args: Tensor[..., 4]. Returns: Tensor[..., 4]."""
    p1, p2 = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([(p1 + p2) / 2, p2 - p1], dim=-1)


def xywh_to_xyxy(boxes_xywh: Tensor) -> Tensor:
    """COCO/OpenCV (x, y, w, h) with (x, y) the top-left corner -> (x1, y1, x2, y2).
    Args: Tensor[..., 4]. Returns: Tensor[..., 4]."""
    xy, wh = boxes_xywh[..., :2], boxes_xywh[..., 2:4]
    return torch.cat([xy, xy + wh], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> COCO/OpenCV (x, y, w, h). Args: Tensor[..., 4]. Returns: Tensor[..., 4]."""
    p1, p2 = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([p1, p2 - p1], dim=-1)


def clip_boxes(boxes: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Clip xyxy boxes to an image of size (height, width); returns a new tensor.
    Args: boxes Tensor[..., 4]. Returns: Tensor[..., 4]."""
    h, w = image_hw
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


# ------------------------------------------------------------------ IoU helpers
def diou_nms_matrix(boxes1: Tensor, boxes2: Tensor, beta: float = 0.6) -> Tensor:
    """The DIoU-NMS criterion of Zheng et al. (AAAI 2020), as darknet's `box_diounms`:

        IoU(a, b) - (d^2 / c^2) ** beta

    with d the distance between the box centres and c the diagonal of the smallest box
    enclosing both. beta=1 is plain DIoU (`torchvision.ops.distance_box_iou`); the paper
    and darknet's `beta_nms` default use 0.6. When c == 0 (two identical points) the
    value is the IoU, as in darknet.

    Args:
        boxes1: Tensor[N, 4] xyxy.
        boxes2: Tensor[M, 4] xyxy.
    Returns:
        Tensor[N, M].
    """
    # torchvision has IoU and DIoU (beta=1); the paper's beta on the distance term is darknet's own
    iou = box_iou(boxes1, boxes2).nan_to_num_(0.0)  # (N, M); a zero union (two empty boxes): IoU 0
    x1a, y1a, x2a, y2a = (v[:, None] for v in boxes1.unbind(-1))  # each (N, 1)
    x1b, y1b, x2b, y2b = (v[None, :] for v in boxes2.unbind(-1))  # each (1, M)
    tiny = torch.finfo(boxes1.dtype).tiny
    cw = torch.maximum(x2a, x2b) - torch.minimum(x1a, x1b)  # enclosing box
    ch = torch.maximum(y2a, y2b) - torch.minimum(y1a, y1b)
    c2 = cw * cw + ch * ch  # (N, M) squared diagonal
    dx = (x1a + x2a - x1b - x2b) / 2  # centre offsets
    dy = (y1a + y2a - y1b - y2b) / 2
    d2 = dx * dx + dy * dy
    return iou - (d2 / c2.clamp(min=tiny)) ** beta  # c2 == 0 forces d2 == 0: penalty 0


# ------------------------------------------------------------------ decoding
def decode_head(output: Tensor, head: HeadSpec, input_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Decode one `[yolo]` head.

    Args:
        output: Tensor[B, A*(5+C), H, W], the tensor darknet's [yolo] layer receives.
        head: the [yolo] layer (`head_anchors` in input pixels, `classes`, `scale_x_y`, `new_coords`).
        input_hw: (height, width) of the network input.
    Returns:
        boxes Tensor[B, A*H*W, 4] xyxy in input pixels, objectness Tensor[B, A*H*W],
        class_probs Tensor[B, A*H*W, C]; rows in darknet's order (anchor, y, x).
    """
    anchors = head.head_anchors
    na, nc = len(anchors), int(head.classes)
    b, ch, gh, gw = output.shape
    if ch != na * (5 + nc):
        raise ValueError(f"[yolo] head expects {na}*(5+{nc})={na * (5 + nc)} channels, got {ch}")
    p = output.reshape(b, na, 5 + nc, gh, gw).permute(0, 1, 3, 4, 2)  # (B, A, H, W, 5+C)
    s = float(head.scale_x_y)
    stride = output.new_tensor([input_hw[1] / gw, input_hw[0] / gh])  # (2,) x, y
    gy, gx = torch.meshgrid(
        torch.arange(gh, device=output.device, dtype=output.dtype),
        torch.arange(gw, device=output.device, dtype=output.dtype),
        indexing="ij",
    )
    grid = torch.stack([gx, gy], dim=-1)  # (H, W, 2)
    anchor_wh = output.new_tensor(anchors).view(1, na, 1, 1, 2)  # (1, A, 1, 1, 2)
    if int(head.new_coords):
        xy01, wh_raw, rest = p[..., :2], p[..., 2:4], p[..., 4:]
        wh = (2 * wh_raw) ** 2 * anchor_wh
    else:
        xy01, rest = p[..., :2].sigmoid(), p[..., 4:].sigmoid()
        wh = p[..., 2:4].exp() * anchor_wh
    xy = (xy01 * s - (s - 1) / 2 + grid) * stride  # (B, A, H, W, 2) centres in input pixels
    boxes_cxcywh = torch.cat([xy, wh], dim=-1).reshape(b, na * gh * gw, 4)
    rest = rest.reshape(b, na * gh * gw, 1 + nc)
    return cxcywh_to_xyxy(boxes_cxcywh), rest[..., 0], rest[..., 1:]


def decode_heads(outputs: Sequence[Tensor], heads: Sequence[HeadSpec], input_hw: tuple[int, int]) -> DecodedHeads:
    """Decode every `[yolo]` head of a network and concatenate them in cfg order.

    Args:
        outputs: one Tensor[B, A_i*(5+C), H_i, W_i] per head.
        heads: the matching [yolo] layers.
        input_hw: (height, width) of the network input.
    Returns:
        DecodedHeads(boxes Tensor[B, N, 4] xyxy input pixels, objectness Tensor[B, N],
        class_probs Tensor[B, N, C]), N = sum_i A_i*H_i*W_i, heads in cfg order.
    """
    if len(outputs) != len(heads):
        raise ValueError(f"{len(outputs)} head outputs but {len(heads)} [yolo] layers")
    if not outputs:
        raise ValueError("no [yolo] head outputs to decode")
    parts = [decode_head(o, h, input_hw) for o, h in zip(outputs, heads)]
    boxes, obj, cls = zip(*parts)
    return DecodedHeads(torch.cat(boxes, 1), torch.cat(obj, 1), torch.cat(cls, 1))
