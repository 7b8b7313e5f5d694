"""The [yolo] loss: hand-computed values for one cell, assignment and ignore mask against
loops, and each freebie switch changing what it should (and nothing else)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from yolo4.darknet.layers import YoloLayer
from yolo4.ops.losses import (
    LossOverrides,
    YoloLoss,
    assign_targets,
    decode_xy_wh,
    ignore_mask,
    smooth_class_targets,
    wh_iou,
)


def head(**kw) -> YoloLayer:
    base = dict(
        mask=[0],
        anchors=[(16.0, 16.0)],
        classes=2,
        num=1,
        scale_x_y=1.0,
        iou_loss="ciou",
        iou_normalizer=0.07,
        cls_normalizer=1.0,
        obj_normalizer=1.0,
        ignore_thresh=0.7,
        iou_thresh=1.0,
    )
    base.update(kw)
    return YoloLayer(**base)


def ciou_by_hand(a, b) -> float:
    """1 - CIoU of two xyxy boxes, from the paper's formula."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    iou = inter / (wa * ha + wb * hb - inter)
    d2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    v = 4 / math.pi**2 * (math.atan(wb / hb) - math.atan(wa / ha)) ** 2
    alpha = v / (1 - iou + v)
    return 1 - iou + d2 / c2 + alpha * v


# ------------------------------------------------------------------ one cell by hand
def test_one_cell_by_hand():
    # input 64x64, one head of 2x2 cells (stride 32), one 16x16 anchor, 2 classes; all outputs 0:
    # every prediction is a 16x16 box at its cell centre, objectness and classes are sigmoid(0)=0.5.
    h = head()
    out = torch.zeros(1, 7, 2, 2, requires_grad=True)
    truth = torch.tensor([[0, 1, 0.0, 8.0, 32.0, 24.0]])  # 32x16 at the centre of cell (0, 0), class 1
    total, parts = YoloLoss([h])([out], truth, (64, 64))
    pred = (8.0, 8.0, 24.0, 24.0)  # 16x16 at (16, 16)
    box = ciou_by_hand(pred, (0.0, 8.0, 32.0, 24.0)) * 0.07
    # BCE(logit 0, any target) = log 2; other cells' boxes do not reach the truth (no ignores)
    obj = math.log(2) * 0.4  # stride 32 -> balance 0.4
    cls = math.log(2)
    assert parts["box"].item() == pytest.approx(box, rel=1e-5)
    assert parts["obj"].item() == pytest.approx(obj, rel=1e-6)
    assert parts["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert total.item() == pytest.approx(box + obj + cls, rel=1e-5)
    total.backward()
    g = out.grad.view(7, 2, 2)
    assert g[:, 1, 1].abs().sum() > 0  # negative cells get objectness gradient only
    assert g[[0, 1, 2, 3, 5, 6], 1, 1].abs().sum() == 0


def test_one_cell_nonzero_logits_by_hand():
    # objectness logit 2 at the assigned cell, class logits (1, -1): BCE values by hand
    h = head()
    out = torch.zeros(1, 7, 2, 2)
    out[0, 4, 0, 0], out[0, 5, 0, 0], out[0, 6, 0, 0] = 2.0, 1.0, -1.0
    truth = torch.tensor([[0, 0, 8.0, 8.0, 24.0, 24.0]])  # exactly the prediction: CIoU loss 0
    _, parts = YoloLoss([h])([out], truth, (64, 64))

    def bce(x, t):
        p = 1 / (1 + math.exp(-x))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    assert parts["box"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["obj"].item() == pytest.approx((bce(2.0, 1) + 3 * math.log(2)) / 4 * 0.4, rel=1e-5)
    assert parts["cls"].item() == pytest.approx((bce(1.0, 1) + bce(-1.0, 0)) / 2, rel=1e-5)


def test_batch_size_factor_and_empty_targets():
    h = head()
    out = torch.zeros(3, 7, 2, 2)
    total, parts = YoloLoss([h])([out], torch.zeros(0, 6), (64, 64))
    assert parts["box"].item() == 0 and parts["cls"].item() == 0
    assert total.item() == pytest.approx(3 * math.log(2) * 0.4, rel=1e-6)


# ------------------------------------------------------------------ assignment
def test_wh_iou_matches_box_iou():
    wh1, wh2 = torch.rand(7, 2) * 50 + 1, torch.rand(5, 2) * 50 + 1
    centred = lambda wh: torch.cat([-wh / 2, wh / 2], 1)  # noqa: E731
    torch.testing.assert_close(wh_iou(wh1, wh2), box_iou(centred(wh1), centred(wh2)))


def _heads_tiny(iou_thresh=1.0):
    anchors = [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]
    return [
        head(mask=[3, 4, 5], anchors=anchors, num=6, iou_thresh=iou_thresh),
        head(mask=[1, 2, 3], anchors=anchors, num=6, iou_thresh=iou_thresh),
    ]


def test_assignment_best_anchor_and_cell():
    heads = _heads_tiny()
    truth = torch.tensor(
        [
            [0, 0, 100.0, 100.0, 180.0, 180.0],  # 80x80 -> anchor 3 (81,82), both heads use it
            [1, 1, 40.0, 200.0, 64.0, 228.0],
        ]
    )  # 24x28 -> anchor 1 (23,27), head 2 only
    a1, a2 = assign_targets(truth, heads, [(13, 13), (26, 26)], (416, 416))
    assert a1.truth.tolist() == [0] and a1.anchor.tolist() == [0]  # mask index of anchor 3 in [3,4,5]
    assert (a1.gx.item(), a1.gy.item()) == (140 // 32, 140 // 32)
    assert sorted(zip(a2.truth.tolist(), a2.anchor.tolist())) == [(0, 2), (1, 0)]
    assert (a2.gx[a2.truth == 1].item(), a2.gy[a2.truth == 1].item()) == (52 // 16, 214 // 16)
    assert a2.batch[a2.truth == 1].item() == 1


def test_assignment_unused_anchor_falls_to_best_used_one():
    # 10x14 is anchor 0, which no yolov4-tiny head uses: the truth takes the best used anchor (1)
    heads = _heads_tiny()
    a1, a2 = assign_targets(torch.tensor([[0, 0, 0.0, 0.0, 10.0, 14.0]]), heads, [(13, 13), (26, 26)], (416, 416))
    assert len(a1.truth) == 0 and a2.anchor.tolist() == [0]


def test_assignment_matches_loop():
    torch.manual_seed(0)
    heads = _heads_tiny(iou_thresh=0.213)
    m = 40
    xy = torch.rand(m, 2) * 300
    wh = torch.rand(m, 2) * 200 + 4
    truth = torch.cat([torch.randint(0, 4, (m, 1)).float(), torch.zeros(m, 1), xy, xy + wh], 1)
    grids = [(13, 13), (26, 26)]
    got = assign_targets(truth, heads, grids, (416, 416))
    anchors = torch.tensor(heads[0].anchors)
    used = [1, 2, 3, 4, 5]
    for hi, (h, (gh, gw)) in enumerate(zip(heads, grids)):
        expect = set()
        for t in range(m):
            ious = wh_iou(wh[t : t + 1], anchors)[0]
            best = max(used, key=lambda k: ious[k].item())
            for ai, k in enumerate(h.mask):
                if k == best or ious[k] > h.iou_thresh:
                    cx, cy = (xy[t] + wh[t] / 2).tolist()
                    expect.add((t, ai, min(int(cy // (416 / gh)), gh - 1), min(int(cx // (416 / gw)), gw - 1)))
        a = got[hi]
        assert set(zip(a.truth.tolist(), a.anchor.tolist(), a.gy.tolist(), a.gx.tolist())) == expect


def test_ignore_mask_matches_loop():
    torch.manual_seed(1)
    b, n = 3, 50
    p1 = torch.rand(b, n, 2) * 100
    preds = torch.cat([p1, p1 + torch.rand(b, n, 2) * 60 + 1], -1)
    t1 = torch.rand(7, 2) * 100
    targets = torch.cat(
        [torch.tensor([0, 0, 0, 2, 2, 2, 2.0])[:, None], torch.zeros(7, 1), t1, t1 + torch.rand(7, 2) * 60 + 1], 1
    )
    got = ignore_mask(preds, targets, b, 0.3)
    for i in range(b):
        g = targets[targets[:, 0] == i, 2:]
        expect = box_iou(preds[i], g).max(1).values > 0.3 if len(g) else torch.zeros(n, dtype=torch.bool)
        assert torch.equal(got[i], expect)


# ------------------------------------------------------------------ freebies on/off
def _random_case(seed=0, **head_kw):
    torch.manual_seed(seed)
    anchors = [(12.0, 12.0), (30.0, 20.0), (20.0, 40.0)]
    h = head(mask=[0, 1, 2], anchors=anchors, num=3, classes=3, **head_kw)
    out = torch.randn(2, 3 * 8, 4, 4)  # 64x64 input, stride 16
    truth = torch.tensor([[0, 2, 4.0, 4.0, 30.0, 20.0], [1, 0, 30.0, 30.0, 52.0, 60.0], [1, 1, 8.0, 40.0, 20.0, 50.0]])
    return h, out, truth


def _parts(h, out, truth, overrides=None):
    return YoloLoss([h], overrides=overrides or LossOverrides())([out], truth, (64, 64))[1]


def test_label_smoothing_changes_only_class_targets():
    t = smooth_class_targets(torch.tensor([1, 0]), 3, 0.1)
    torch.testing.assert_close(t, torch.tensor([[0.05, 0.95, 0.05], [0.95, 0.05, 0.05]]))
    h, out, truth = _random_case()
    a, b = _parts(h, out, truth), _parts(h, out, truth, LossOverrides(label_smooth_eps=0.1))
    assert a["cls"] != b["cls"]
    assert a["box"] == b["box"] and a["obj"] == b["obj"]


def test_iou_thresh_adds_anchors():
    h, out, truth = _random_case()
    one = assign_targets(truth, [h], [(4, 4)], (64, 64))[0]
    several = assign_targets(truth, [LossOverrides(iou_thresh=0.2).apply(h)], [(4, 4)], (64, 64))[0]
    assert len(one.truth) == len(truth)  # exactly one anchor per truth
    assert len(several.truth) > len(one.truth)
    pairs_one = set(zip(one.truth.tolist(), one.anchor.tolist()))
    assert pairs_one <= set(zip(several.truth.tolist(), several.anchor.tolist()))
    a, b = _parts(h, out, truth), _parts(h, out, truth, LossOverrides(iou_thresh=0.2))
    assert a["box"] != b["box"] and a["cls"] != b["cls"]


def test_ignore_thresh_removes_negatives():
    # a confident prediction in a cell next to the truth, overlapping it well: with ignore_thresh
    # 0.4 it is not a negative (lower objectness loss); with 1.0 it is punished
    h = head()
    out = torch.zeros(1, 7, 2, 2)
    out[0, 0, 0, 1] = -3.0  # cell (x=1, y=0): x offset sigmoid(-3)=0.047 -> centre x 33.5
    out[0, 2:4, 0, 1] = math.log(2.0)  # 32x32 box
    out[0, 4, 0, 1] = 4.0  # confident
    truth = torch.tensor([[0, 0, 6.0, 0.0, 38.0, 32.0]])  # centre (22, 16): cell (0, 0)
    a = _parts(h, out, truth, LossOverrides(ignore_thresh=0.4))  # their IoU is 0.47
    b = _parts(h, out, truth, LossOverrides(ignore_thresh=1.0))
    assert a["obj"] < b["obj"]
    assert a["box"] == b["box"] and a["cls"] == b["cls"]


def test_box_loss_variants_differ_only_in_box():
    h, out, truth = _random_case()
    parts = {k: _parts(h, out, truth, LossOverrides(iou_loss=k)) for k in ("ciou", "diou", "giou", "mse")}
    boxes = {k: float(p["box"]) for k, p in parts.items()}
    assert len(set(boxes.values())) == 4
    for p in parts.values():
        assert p["obj"] == parts["ciou"]["obj"] and p["cls"] == parts["ciou"]["cls"]
    with pytest.raises(ValueError, match="iou_loss"):
        LossOverrides(iou_loss="foo").apply(h)


def test_scale_x_y_grid_sensitivity():
    raw = torch.tensor([[-20.0, 20.0, 0.0, 0.0]])
    anchor = torch.tensor([[16.0, 16.0]])
    xy1, _ = decode_xy_wh(raw, anchor, head(scale_x_y=1.0))
    xy2, _ = decode_xy_wh(raw, anchor, head(scale_x_y=2.0))
    torch.testing.assert_close(xy1, torch.tensor([[0.0, 1.0]]))  # sigmoid cannot reach the cell edges
    torch.testing.assert_close(xy2, torch.tensor([[-0.5, 1.5]]))  # 2*sigmoid - 0.5 can pass them


def test_new_coords_decoding_and_bce_on_logits():
    """A new_coords head's loss takes logits (the network's training-mode output) and applies the
    logistic that the head's conv applies at inference."""
    h = head(new_coords=1, scale_x_y=2.0)
    raw = torch.logit(torch.tensor([[0.25, 0.75, 0.5, 0.8]]))
    xy, wh = decode_xy_wh(raw, torch.tensor([[10.0, 20.0]]), h)
    torch.testing.assert_close(xy, torch.tensor([[0.0, 1.0]]))  # p*2 - 0.5
    torch.testing.assert_close(wh, torch.tensor([[10.0, 51.2]]))  # (2p)^2 * anchor
    out = torch.zeros(1, 7, 2, 2)  # logit 0: BCE(0.5, t) = log 2
    _, parts = YoloLoss([h])([out], torch.tensor([[0, 1, 0.0, 0.0, 40.0, 40.0]]), (64, 64))
    assert parts["obj"].item() == pytest.approx(math.log(2) * 0.4, rel=1e-5)
    assert parts["cls"].item() == pytest.approx(math.log(2), rel=1e-5)


def test_saturated_new_coords_negative_still_learns():
    """The bug this guards against: with probabilities, a negative whose objectness saturated at
    1.0 (bf16 from a logit of about 6) had a clamped BCE of 16 and no gradient, forever."""
    h = head(new_coords=1, scale_x_y=2.0)
    out = torch.zeros(1, 7, 2, 2)
    out[0, 4] = 30.0  # every objectness logit saturated: sigmoid is exactly 1 in float32
    out.requires_grad_(True)
    total, parts = YoloLoss([h])([out], torch.tensor([[0, 1, 0.0, 0.0, 10.0, 10.0]]), (64, 64))
    total.backward()
    assert parts["obj"].item() > 1.0
    assert (out.grad[0, 4] > 0).sum() >= 3  # the negatives are pushed down (not clamped away)


def test_saturated_new_coords_size_keeps_the_gradient_finite():
    """A logistic size output of exactly 0 (saturated in float32) must not give a zero-size box:
    CIoU's atan(w / h) then has a finite loss but a NaN gradient (torchvision's loss itself does)."""
    from torchvision.ops import complete_box_iou_loss

    zero_h = torch.tensor([[10.0, 10.0, 20.0, 10.0]], requires_grad=True)
    complete_box_iou_loss(zero_h, torch.tensor([[9.0, 9.0, 21.0, 22.0]]), reduction="sum").backward()
    assert torch.isnan(zero_h.grad).all()  # the failure this guards against
    h = head(new_coords=1, scale_x_y=2.0)
    out = torch.zeros(1, 7, 2, 2)
    out[0, 3] = -200.0  # every th logit saturated: sigmoid is exactly 0 in float32
    out.requires_grad_(True)
    total, parts = YoloLoss([h])([out], torch.tensor([[0, 1, 0.0, 0.0, 40.0, 40.0]]), (64, 64))
    total.backward()
    assert torch.isfinite(total) and parts["box"].item() > 0
    assert torch.isfinite(out.grad).all()


def test_nan_output_gives_a_nan_loss_not_an_error():
    """A NaN among a head's outputs must reach the loss (training skips the step), not raise."""
    h = head(new_coords=1, scale_x_y=2.0)
    out = torch.zeros(1, 7, 2, 2)
    out[0, 4, 1, 1] = float("nan")
    total, _ = YoloLoss([h])([out], torch.tensor([[0, 1, 0.0, 0.0, 40.0, 40.0]]), (64, 64))
    assert torch.isnan(total)


def test_normalisers_and_balance_scale_their_terms():
    h, out, truth = _random_case()
    a = _parts(h, out, truth)
    b = _parts(h, out, truth, LossOverrides(iou_normalizer=0.14, cls_normalizer=0.5, obj_normalizer=3.0))
    assert b["box"].item() == pytest.approx(2 * a["box"].item(), rel=1e-5)
    assert b["cls"].item() == pytest.approx(0.5 * a["cls"].item(), rel=1e-5)
    assert b["obj"].item() == pytest.approx(3 * a["obj"].item(), rel=1e-5)
    c = YoloLoss([h], balance=[2.0])([out], truth, (64, 64))[1]
    assert c["obj"].item() == pytest.approx(a["obj"].item() / 1.0 * 2.0, rel=1e-5)  # stride 16 default: 1.0


def test_loss_is_finite_with_extreme_outputs_and_has_gradients():
    h, out, truth = _random_case()
    out = (out * 50).requires_grad_(True)
    total, _ = YoloLoss([h])([out], truth, (64, 64))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(out.grad).all()


def test_neighbor_cells_add_the_two_nearest_cells():
    h = head()
    # centre (40, 20) in a 4x4 grid of 16 px cells: cell (x=2, y=1), fractions (0.5, 0.25)
    truth = torch.tensor([[0, 0, 32.0, 12.0, 48.0, 28.0]])
    (one,) = assign_targets(truth, [h], [(4, 4)], (64, 64))
    (three,) = assign_targets(truth, [h], [(4, 4)], (64, 64), neighbor_cells=True)
    assert list(zip(one.gx.tolist(), one.gy.tolist())) == [(2, 1)]
    assert sorted(zip(three.gx.tolist(), three.gy.tolist())) == [(2, 0), (2, 1), (3, 1)]
    # at the image corner there is no neighbour outside the grid
    (corner,) = assign_targets(torch.tensor([[0, 0, 0.0, 0.0, 6.0, 6.0]]), [h], [(4, 4)], (64, 64), neighbor_cells=True)
    assert list(zip(corner.gx.tolist(), corner.gy.tolist())) == [(0, 0)]
    out = torch.randn(1, 7, 4, 4, generator=torch.Generator().manual_seed(0))
    a = YoloLoss([h])([out], truth, (64, 64))[1]
    b = YoloLoss([h], neighbor_cells=True)([out], truth, (64, 64))[1]
    assert a["obj"] != b["obj"] and a["box"] != b["box"]


def test_iou_objectness_targets_the_predictions_iou_by_hand():
    # as test_one_cell_by_hand: the prediction 16x16 at (16, 16), the truth 32x16 around it -> IoU 0.5
    h = head()
    out = torch.zeros(1, 7, 2, 2)
    truth = torch.tensor([[0, 1, 0.0, 8.0, 32.0, 24.0]])
    _, plain = YoloLoss([h])([out], truth, (64, 64))
    _, aware = YoloLoss([h], iou_objectness=True)([out], truth, (64, 64))
    # BCE(logit 0, target t) = log 2 whatever t: same objectness loss at logit 0 ...
    assert aware["obj"].item() == pytest.approx(plain["obj"].item(), rel=1e-6)
    out[0, 4, 0, 0] = 3.0  # ... but a confident prediction is now pushed towards 0.5, not 1

    def bce(x, t):
        p = 1 / (1 + math.exp(-x))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    _, aware = YoloLoss([h], iou_objectness=True)([out], truth, (64, 64))
    assert aware["obj"].item() == pytest.approx((bce(3.0, 0.5) + 3 * math.log(2)) / 4 * 0.4, rel=1e-5)
    assert aware["box"].item() == pytest.approx(plain["box"].item()) and aware["cls"].item() == plain["cls"].item()


def test_paired_box_iou_matches_box_iou_diagonal():
    from yolo4.ops.losses import paired_box_iou

    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 25], [0, 0, 1, 1]])
    b = torch.tensor([[5.0, 5, 15, 15], [5, 5, 15, 25], [2, 2, 3, 3]])
    torch.testing.assert_close(paired_box_iou(a, b), box_iou(a, b).diagonal())
