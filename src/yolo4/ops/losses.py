"""The loss of darknet's `[yolo]` layer, vectorised, with its freebies as switches.

    loss_fn = YoloLoss(model.yolo_layers)
    total, parts = loss_fn(model.train()(images), targets, input_hw=(h, w))  # training-mode outputs: logits
    # targets: Tensor[M, 6] rows (batch_idx, class, x1, y1, x2, y2) in input pixels

What it does, per `[yolo]` head (all values come from the head's cfg keys):

* Assignment (`assign_targets`): every ground truth takes the anchor with the best
  width/height IoU over the anchors of all heads (darknet's `best_n` over `l.total`, restricted
  to anchors some `mask` uses)
  plus every other anchor whose wh-IoU exceeds `iou_thresh` (several anchors per truth);
  a head trains the pairs whose anchor is in its `mask`, in the cell holding the truth's centre.
* Box (`BOX_LOSSES`): `iou_loss=ciou|diou|giou` use torchvision's `complete_box_iou_loss`,
  `distance_box_iou_loss`, `generalized_box_iou_loss` on decoded xyxy boxes; `mse` is
  darknet's coordinate MSE (tx, ty, log-wh) scaled by (2 - w*h/area). Decoding is the
  grid-sensitive `sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2`, or the `new_coords=1` style
  (`p * s - (s-1)/2`, `(2 p)^2 * anchor` with `p = sigmoid(t)`, the logistic that the head's
  conv applies at inference; in training the network hands over the logits, see
  `yolo4.darknet.network`).
* Objectness: BCE on the logits, target 1 at assigned cells (or, with `iou_objectness`, the prediction's IoU
  with its truth), 0 elsewhere except predictions whose best IoU with any truth of their image
  exceeds `ignore_thresh` (not negatives, not positives).
* Classes: BCE on the logits at assigned cells, targets smoothed by `label_smooth_eps`
  (1 - eps/2 for the class, eps/2 for the others, darknet's rule).

Normalisation (PyTorch style, so one learning rate fits every batch size): the box term is the
mean over assigned pairs times `iou_normalizer`; objectness the mean over the head's cells
(ignored cells count as zero) times `obj_normalizer` and the head's `balance`; classes the
mean over assigned pairs and classes times `cls_normalizer`; the sum is multiplied by the batch
size. Heads are balanced by stride (8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1) unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import (
    box_iou,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
)

from yolo4.ops.boxes import HeadSpec


class LossHeadSpec(HeadSpec, Protocol):
    """What the loss needs from a `[yolo]` layer (`yolo4.darknet.layers.YoloLayer`, a dataclass,
    has it): the decoding keys plus darknet's training keys."""

    anchors: list[tuple[float, float]]
    mask: list[int]
    iou_loss: str
    iou_thresh: float
    ignore_thresh: float
    label_smooth_eps: float
    iou_normalizer: float
    cls_normalizer: float
    obj_normalizer: float


H = TypeVar("H", bound=Any)  # a LossHeadSpec dataclass (dataclasses.replace copies it)


STRIDE_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1}


# ------------------------------------------------------------------ assignment
class Assignment(NamedTuple):
    """The (truth, anchor, cell) pairs one head trains; P pairs.

    truth Tensor[P] index into the targets rows; batch Tensor[P]; anchor Tensor[P] index into
    the head's mask (0..A-1); gy, gx Tensor[P] grid cell.
    """

    truth: Tensor
    batch: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes sharing a centre. wh1 Tensor[M, 2], wh2 Tensor[K, 2]. Returns Tensor[M, K]."""
    centred = lambda wh: torch.cat([-wh / 2, wh / 2], -1)  # noqa: E731  (M, 4) xyxy around 0
    return box_iou(centred(wh1), centred(wh2)).nan_to_num_(0.0)  # empty boxes: IoU 0


def assign_targets(
    targets: Tensor,
    heads: Sequence[LossHeadSpec],
    grids_hw: Sequence[tuple[int, int]],
    input_hw: tuple[int, int],
    neighbor_cells: bool = False,
) -> list[Assignment]:
    """Darknet's truth -> (head, anchor, cell) assignment, for every head at once.

    Args:
        targets: Tensor[M, 6] (batch_idx, class, x1, y1, x2, y2) in input pixels.
        heads: the [yolo] layers (they share the network's anchor list; `mask` picks each head's).
        grids_hw: (H_i, W_i) of each head's output.
        input_hw: (height, width) of the network input.
        neighbor_cells: also train, for each pair, the horizontal and the vertical neighbour cell
            nearest to the truth's centre (Scaled-YOLOv4/YOLOv5 style: 3 cells instead of 1; it
            suits heads whose scale_x_y lets a cell predict a centre up to half a cell outside).
    Returns:
        One Assignment per head. A truth gets the best wh-IoU anchor among the anchors some head
        uses plus, per head, every masked anchor with wh-IoU > that head's `iou_thresh`.
        (darknet takes the best over all `num` anchors, so a truth whose best is an anchor no head
        uses, e.g. anchor 0 of yolov4-tiny, trains nothing there; here it takes the best used one.)
    """
    device = targets.device
    anchors = torch.tensor(heads[0].anchors, dtype=torch.float32, device=device)  # (K, 2)
    boxes = targets[:, 2:6].float()
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)  # (M, 2)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (M, 2) x, y
    ious = wh_iou(wh, anchors)  # (M, K)
    used = sorted({m for h in heads for m in h.mask})
    used_t = torch.tensor(used, dtype=torch.long, device=device)
    best = used_t[ious[:, used_t].argmax(1)] if len(targets) else torch.zeros(0, dtype=torch.long, device=device)
    out = []
    for head, (gh, gw) in zip(heads, grids_hw):
        mask = torch.tensor(head.mask, dtype=torch.long, device=device)  # (A,)
        chosen = best[:, None] == mask[None]  # (M, A)
        if head.iou_thresh < 1.0:
            chosen = chosen | (ious[:, mask] > head.iou_thresh)
        truth, anchor = chosen.nonzero(as_tuple=True)  # (P,), (P,)
        stride_xy = torch.tensor([input_hw[1] / gw, input_hw[0] / gh], device=device)
        c = centre[truth] / stride_xy  # (P, 2) x, y in cells
        cell = c.floor().long()
        gx, gy = cell[:, 0].clamp(0, gw - 1), cell[:, 1].clamp(0, gh - 1)
        if neighbor_cells:
            frac = c - c.floor()
            moves = [
                ((frac[:, 0] < 0.5) & (gx > 0), -1, 0),
                ((frac[:, 0] >= 0.5) & (gx < gw - 1), 1, 0),
                ((frac[:, 1] < 0.5) & (gy > 0), 0, -1),
                ((frac[:, 1] >= 0.5) & (gy < gh - 1), 0, 1),
            ]
            truth = torch.cat([truth] + [truth[m] for m, _, _ in moves])
            anchor = torch.cat([anchor] + [anchor[m] for m, _, _ in moves])
            gx, gy = (
                torch.cat([gx] + [gx[m] + dx for m, dx, _ in moves]),
                torch.cat([gy] + [gy[m] + dy for m, _, dy in moves]),
            )
        out.append(Assignment(truth, targets[truth, 0].long(), anchor, gy, gx))
    return out


# ------------------------------------------------------------------ decoding (differentiable)
MIN_BOX_WH = 1e-3  # input pixels: the smallest box size a new_coords head decodes to in the loss


def decode_xy_wh(raw: Tensor, anchor_wh: Tensor, head: LossHeadSpec) -> tuple[Tensor, Tensor]:
    """Cell-relative centre and size of predictions.

    Args:
        raw: Tensor[..., 4] the head's (tx, ty, tw, th) logits (the network's training-mode output).
        anchor_wh: Tensor[..., 2] anchors in input pixels.
    Returns:
        xy Tensor[..., 2] offset from the cell's corner in cells (grid-sensitive with scale_x_y),
        wh Tensor[..., 2] in input pixels.
    """
    s = float(head.scale_x_y)
    if head.new_coords:
        p = raw.sigmoid()
        xy = p[..., :2] * s - (s - 1) / 2
        # a saturated logistic is exactly 0 in float32: a zero-size box gives CIoU a finite loss
        # with a NaN gradient (atan(w / h)), and one such step made every weight NaN
        # (yolov4-csp-leaky from scratch); the floor's gradient is 0, as the saturated output's is
        wh = ((2 * p[..., 2:4]) ** 2 * anchor_wh).clamp_min(MIN_BOX_WH)
    else:
        xy = raw[..., :2].sigmoid() * s - (s - 1) / 2
        wh = raw[..., 2:4].clamp(-8.0, 8.0).exp() * anchor_wh  # clamp: no overflow, no zero-size box
    return xy, wh


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes1[i] with boxes2[i]. Both Tensor[P, 4] xyxy. Returns Tensor[P] (0 for empty unions)."""
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])  # (P, 2)
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)  # (P,)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp_min(0).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp_min(0).prod(-1)
    return inter / (area1 + area2 - inter).clamp_min(1e-9)


# ------------------------------------------------------------------ box losses, one per variant
def mse_box_loss(
    pred_xy: Tensor, pred_wh: Tensor, true_xy: Tensor, true_wh: Tensor, anchor_wh: Tensor, input_hw: tuple[int, int]
) -> Tensor:
    """darknet's MSE on (x, y) cell offsets and log(w/anchor), scaled by (2 - w*h/area).
    All Tensor[P, 2]; xy in cells, wh in pixels. Returns Tensor[P]."""
    scale = 2 - true_wh.prod(-1) / (input_hw[0] * input_hw[1])
    d_xy = (pred_xy - true_xy).pow(2).sum(-1)
    d_wh = (torch.log(pred_wh / anchor_wh) - torch.log(true_wh / anchor_wh)).pow(2).sum(-1)
    return scale * (d_xy + d_wh) / 2


IOU_LOSSES: dict[str, Callable[..., Tensor]] = {
    "ciou": complete_box_iou_loss,
    "diou": distance_box_iou_loss,
    "giou": generalized_box_iou_loss,
}
BOX_LOSS_NAMES = (*IOU_LOSSES, "mse")


def smooth_class_targets(classes: Tensor, num_classes: int, eps: float) -> Tensor:
    """One-hot class targets with darknet's label smoothing.
    classes Tensor[P] int. Returns Tensor[P, C]: 1 - eps/2 for the class, eps/2 elsewhere."""
    t = torch.full((len(classes), num_classes), eps / 2, device=classes.device)
    t[torch.arange(len(classes), device=classes.device), classes] = 1 - eps / 2
    return t


def ignore_mask(pred_boxes: Tensor, targets: Tensor, batch_size: int, thresh: float) -> Tensor:
    """Predictions that overlap a truth of their own image by IoU > thresh (darknet's ignore_thresh).

    Args:
        pred_boxes: Tensor[B, N, 4] xyxy input pixels (decoded, detached).
        targets: Tensor[M, 6] (batch_idx, class, x1, y1, x2, y2).
    Returns:
        Tensor[B, N] bool, True where the prediction is not a negative.
    """
    b, n = pred_boxes.shape[:2]
    if len(targets) == 0 or thresh >= 1.0 or n == 0:
        return torch.zeros(b, n, dtype=torch.bool, device=pred_boxes.device)
    bi = targets[:, 0].long()
    counts = torch.bincount(bi, minlength=batch_size)
    g = int(counts.max())
    order = torch.argsort(bi, stable=True)
    slot = torch.arange(len(bi), device=bi.device) - torch.cumsum(counts, 0)[bi[order]] + counts[bi[order]]
    gt = pred_boxes.new_zeros(b, g, 4)  # (B, G, 4) zero boxes have IoU 0
    gt[bi[order], slot] = targets[order, 2:6].to(pred_boxes.dtype)
    lt = torch.max(pred_boxes[:, :, None, :2], gt[:, None, :, :2])  # (B, N, G, 2)
    rb = torch.min(pred_boxes[:, :, None, 2:], gt[:, None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)  # (B, N, G)
    area_p = (pred_boxes[..., 2:] - pred_boxes[..., :2]).clamp_min(0).prod(-1)  # (B, N)
    area_g = (gt[..., 2:] - gt[..., :2]).prod(-1)  # (B, G)
    iou = inter / (area_p[:, :, None] + area_g[:, None] - inter).clamp_min(1e-9)
    return iou.max(-1).values > thresh


# ------------------------------------------------------------------ the loss
@dataclass(frozen=True)
class LossOverrides:
    """Values that replace every head's cfg keys (None: keep the cfg's). The freebie switches."""

    iou_loss: str | None = None  # ciou | diou | giou | mse
    iou_thresh: float | None = None  # 1.0: one anchor per truth
    ignore_thresh: float | None = None  # 1.0: every unassigned prediction is a negative
    label_smooth_eps: float | None = None
    scale_x_y: float | None = None
    iou_normalizer: float | None = None
    cls_normalizer: float | None = None
    obj_normalizer: float | None = None

    def apply(self, head: H) -> H:
        """A copy of `head` with the overrides set."""
        changes = {k: v for k, v in self.__dict__.items() if v is not None}
        if changes.get("iou_loss", "ciou") not in BOX_LOSS_NAMES:
            raise ValueError(f"unknown iou_loss '{changes['iou_loss']}' (choose from {', '.join(BOX_LOSS_NAMES)})")
        return replace(head, **changes)


class YoloLoss:
    """darknet's [yolo] loss for a network's heads. See the module docstring.

    Args:
        heads: the network's [yolo] layers (cfg order).
        balance: per-head objectness weights; default by stride (STRIDE_BALANCE).
        overrides: freebie switches applied to every head.
        neighbor_cells: 3 cells per (truth, anchor) instead of darknet's 1 (see `assign_targets`).
        iou_objectness: the objectness target of an assigned prediction is its IoU with the truth
            (detached; YOLOv5 / Scaled-YOLOv4, darknet's `objectness_smooth`) instead of 1, so that
            the score ranks boxes by how well they fit.
    """

    def __init__(
        self,
        heads: Sequence[LossHeadSpec],
        balance: Sequence[float] | None = None,
        overrides: LossOverrides = LossOverrides(),
        neighbor_cells: bool = False,
        iou_objectness: bool = False,
    ):
        self.heads = [overrides.apply(h) for h in heads]
        self.neighbor_cells = neighbor_cells
        self.iou_objectness = iou_objectness
        for h in self.heads:
            if h.iou_loss not in BOX_LOSS_NAMES:
                raise ValueError(f"[yolo] iou_loss={h.iou_loss} is not supported ({', '.join(BOX_LOSS_NAMES)})")
        self.balance = None if balance is None else list(balance)
        if self.balance is not None and len(self.balance) != len(self.heads):
            raise ValueError(f"{len(self.balance)} balance weights for {len(self.heads)} heads")

    def _balance(self, i: int, stride: float) -> float:
        if self.balance is not None:
            return self.balance[i]
        return STRIDE_BALANCE.get(int(round(stride)), 1.0)

    def __call__(
        self, outputs: Sequence[Tensor], targets: Tensor, input_hw: tuple[int, int]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one batch.

        Args:
            outputs: one Tensor[B, A_i*(5+C), H_i, W_i] per head: the network's training-mode output (logits).
            targets: Tensor[M, 6] (batch_idx, class, x1, y1, x2, y2) in input pixels.
            input_hw: (height, width) of the network input.
        Returns:
            total Tensor[] (scaled by the batch size), and detached parts {"box", "obj", "cls"}
            (each already weighted, before the batch-size factor).
        """
        if len(outputs) != len(self.heads):
            raise ValueError(f"{len(outputs)} outputs for {len(self.heads)} heads")
        outputs = [o.float() for o in outputs]  # the loss is computed in float32 (AMP safe)
        targets = targets.to(outputs[0].device).float()
        bsz = outputs[0].shape[0]
        grids = [(int(o.shape[-2]), int(o.shape[-1])) for o in outputs]
        assigned = assign_targets(targets, self.heads, grids, input_hw, self.neighbor_cells)
        zero = outputs[0].new_zeros(())
        box_l, obj_l, cls_l = zero.clone(), zero.clone(), zero.clone()
        for i, (out, head, asg) in enumerate(zip(outputs, self.heads, assigned)):
            na, nc = len(head.mask), head.classes
            gh, gw = out.shape[-2:]
            p = out.view(bsz, na, 5 + nc, gh, gw).permute(0, 1, 3, 4, 2)  # (B, A, H, W, 5+C)
            stride = torch.tensor([input_hw[1] / gw, input_hw[0] / gh], device=out.device)  # (2,) x, y
            anchors = torch.tensor(head.head_anchors, dtype=torch.float32, device=out.device)  # (A, 2)

            # objectness targets and the ignore mask over all predictions
            with torch.no_grad():
                gy, gx = torch.meshgrid(
                    torch.arange(gh, device=out.device), torch.arange(gw, device=out.device), indexing="ij"
                )
                grid = torch.stack([gx, gy], -1).float()  # (H, W, 2)
                xy, wh = decode_xy_wh(p[..., :4], anchors.view(1, na, 1, 1, 2), head)
                centre = (xy + grid) * stride  # (B, A, H, W, 2)
                pred_boxes = torch.cat([centre - wh / 2, centre + wh / 2], -1).view(bsz, -1, 4)
                ignored = ignore_mask(pred_boxes, targets, bsz, head.ignore_thresh).view(bsz, na, gh, gw)
            obj_t = torch.zeros_like(p[..., 4])  # (B, A, H, W)
            weight = (~ignored).float()
            if len(asg.truth):
                ps = p[asg.batch, asg.anchor, asg.gy, asg.gx]  # (P, 5+C)
                t = targets[asg.truth]  # (P, 6)
                anchor_wh = anchors[asg.anchor]  # (P, 2)
                pxy, pwh = decode_xy_wh(ps[:, :4], anchor_wh, head)
                cell = torch.stack([asg.gx, asg.gy], -1).float()  # (P, 2)
                pc = (pxy + cell) * stride
                pbox = torch.cat([pc - pwh / 2, pc + pwh / 2], -1)  # (P, 4) xyxy
                if head.iou_loss == "mse":
                    true_c = (t[:, 2:4] + t[:, 4:6]) / 2 / stride - cell  # (P, 2) in cells
                    true_wh = (t[:, 4:6] - t[:, 2:4]).clamp_min(1e-6)
                    box = mse_box_loss(pxy, pwh, true_c, true_wh, anchor_wh, input_hw)
                else:
                    box = IOU_LOSSES[head.iou_loss](pbox, t[:, 2:6], reduction="none")
                box_l = box_l + box.mean() * head.iou_normalizer
                cls_t = smooth_class_targets(t[:, 1].long(), nc, head.label_smooth_eps)
                cls_l = cls_l + F.binary_cross_entropy_with_logits(ps[:, 5:], cls_t) * head.cls_normalizer
                target = paired_box_iou(pbox.detach(), t[:, 2:6]).clamp(0, 1) if self.iou_objectness else 1.0
                obj_t[asg.batch, asg.anchor, asg.gy, asg.gx] = target
                weight[asg.batch, asg.anchor, asg.gy, asg.gx] = 1.0
            obj = (F.binary_cross_entropy_with_logits(p[..., 4], obj_t, reduction="none") * weight).mean()
            obj_l = obj_l + obj * head.obj_normalizer * self._balance(i, float(stride[0]))
        total = (box_l + obj_l + cls_l) * bsz
        return total, {"box": box_l.detach(), "obj": obj_l.detach(), "cls": cls_l.detach()}
