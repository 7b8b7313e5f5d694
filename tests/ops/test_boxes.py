"""yolo4.ops.boxes: formats, the DIoU-NMS criterion and [yolo] head decoding."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torchvision

from yolo4.ops.boxes import (
    DecodedHeads,
    clip_boxes,
    cxcywh_to_xyxy,
    decode_head,
    decode_heads,
    diou_nms_matrix,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)


@dataclass
class Head:
    """A YoloLayer look-alike: all the cfg's anchors, this head's mask."""

    mask: list[int]
    anchors: list[tuple[float, float]]
    classes: int
    scale_x_y: float = 1.0
    new_coords: int = 0
    beta_nms: float = 0.6
    extra: dict = field(default_factory=dict)

    @property
    def head_anchors(self) -> list[tuple[float, float]]:
        return [self.anchors[m] for m in self.mask]


# ------------------------------------------------------------------ formats
def test_format_conversions_by_hand():
    xyxy = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert xyxy_to_cxcywh(xyxy).tolist() == [[20.0, 40.0, 20.0, 40.0]]
    assert xyxy_to_xywh(xyxy).tolist() == [[10.0, 20.0, 20.0, 40.0]]
    assert cxcywh_to_xyxy(torch.tensor([[20.0, 40.0, 20.0, 40.0]])).tolist() == xyxy.tolist()
    assert xywh_to_xyxy(torch.tensor([[10.0, 20.0, 20.0, 40.0]])).tolist() == xyxy.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_format_round_trips_and_batch_dims(dtype):
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(2, 5, 2, generator=g, dtype=dtype) * 100
    boxes = torch.cat([p1, p1 + torch.rand(2, 5, 2, generator=g, dtype=dtype) * 50], -1)  # (2, 5, 4)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    assert xyxy_to_cxcywh(boxes).dtype == dtype


def test_empty_inputs():
    e = torch.zeros(0, 4)
    assert xyxy_to_cxcywh(e).shape == (0, 4)
    assert clip_boxes(e, (10, 10)).shape == (0, 4)
    assert diou_nms_matrix(e, torch.zeros(3, 4)).shape == (0, 3)


def test_clip_boxes_does_not_touch_input():
    boxes = torch.tensor([[-5.0, 3.0, 120.0, 90.0]])
    before = boxes.clone()
    assert clip_boxes(boxes, (50, 100)).tolist() == [[0.0, 3.0, 100.0, 50.0]]
    assert torch.equal(boxes, before)


# ------------------------------------------------------------------ DIoU-NMS criterion
def _diounms_ref(a, b, beta):
    """darknet's box_diounms, one pair of python-float xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    c = cw * cw + ch * ch
    if c == 0:
        return iou
    d = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    return iou - (d / c) ** beta


def test_diou_nms_matrix_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    # IoU = 100/200; centres (5,5), (5,10): d^2 = 25; enclosing 10x20: c^2 = 500
    expected = 0.5 - (25 / 500) ** 0.6
    assert diou_nms_matrix(a, b, beta=0.6).item() == pytest.approx(expected, rel=1e-6)
    assert diou_nms_matrix(a, a).item() == pytest.approx(1.0)


def test_diou_nms_matrix_against_loop_and_torchvision():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(12, 2, generator=g, dtype=torch.float64) * 50
    boxes = torch.cat([p, p + 1 + torch.rand(12, 2, generator=g, dtype=torch.float64) * 30], 1)
    m = diou_nms_matrix(boxes[:7], boxes[3:], beta=0.6)
    ref = torch.tensor(
        [[_diounms_ref(a.tolist(), b.tolist(), 0.6) for b in boxes[3:]] for a in boxes[:7]], dtype=torch.float64
    )
    torch.testing.assert_close(m, ref)
    # beta = 1 is plain DIoU
    torch.testing.assert_close(diou_nms_matrix(boxes, boxes, beta=1.0), torchvision.ops.distance_box_iou(boxes, boxes))


# ------------------------------------------------------------------ decoding by hand
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_decode_classic_hand_computed_cell():
    # 2 anchors of this head, 2 classes, grid H=2 x W=3, input 64 x 96 -> stride 32 in x and y
    head = Head(mask=[1, 2], anchors=[(5.0, 5.0), (10.0, 20.0), (30.0, 40.0)], classes=2, scale_x_y=1.2)
    out = torch.zeros(1, 2 * 7, 2, 3)
    a, y, x = 1, 1, 2  # anchor (30, 40), last cell
    base = a * 7
    out[0, base + 0, y, x] = 0.0  # sigmoid = 0.5
    out[0, base + 1, y, x] = _logit(0.75)
    out[0, base + 2, y, x] = math.log(2.0)
    out[0, base + 3, y, x] = math.log(0.5)
    out[0, base + 4, y, x] = _logit(0.8)  # objectness
    out[0, base + 5, y, x] = _logit(0.25)
    out[0, base + 6, y, x] = _logit(0.9)
    boxes, obj, cls = decode_head(out, head, (64, 96))
    assert boxes.shape == (1, 2 * 2 * 3, 4) and obj.shape == (1, 12) and cls.shape == (1, 12, 2)
    row = a * 6 + y * 3 + x  # darknet's order: anchor, y, x
    # bx = (0.5*1.2 - 0.1 + 2) * 32 = 80;  by = (0.75*1.2 - 0.1 + 1) * 32 = 57.6
    # bw = 2 * 30 = 60;  bh = 0.5 * 40 = 20
    torch.testing.assert_close(boxes[0, row], torch.tensor([50.0, 47.6, 110.0, 67.6]))
    assert obj[0, row].item() == pytest.approx(0.8, rel=1e-5)
    torch.testing.assert_close(cls[0, row], torch.tensor([0.25, 0.9]))
    # an all-zero cell (anchor (10, 20), cell 0,0): centre (0.5*1.2 - 0.1 + 0) * 32 = 16, anchor-sized
    torch.testing.assert_close(boxes[0, 0], torch.tensor([11.0, 6.0, 21.0, 26.0]))
    assert obj[0, 0].item() == 0.5


def test_decode_new_coords_hand_computed_cell():
    # new_coords=1: the values are already logistic; no sigmoid, w = (2 tw)^2 * anchor
    head = Head(mask=[0], anchors=[(16.0, 32.0)], classes=1, scale_x_y=2.0, new_coords=1)
    out = torch.zeros(1, 6, 4, 4)
    y, x = 2, 1
    out[0, :, y, x] = torch.tensor([0.5, 0.25, 0.5, 0.25, 0.7, 0.6])
    boxes, obj, cls = decode_head(out, head, (32, 32))  # stride 8
    row = y * 4 + x
    # bx = (0.5*2 - 0.5 + 1) * 8 = 12;  by = (0.25*2 - 0.5 + 2) * 8 = 16
    # bw = (2*0.5)^2 * 16 = 16;  bh = (2*0.25)^2 * 32 = 8
    torch.testing.assert_close(boxes[0, row], torch.tensor([4.0, 12.0, 20.0, 20.0]))
    assert obj[0, row].item() == pytest.approx(0.7)
    assert cls[0, row, 0].item() == pytest.approx(0.6)


def _decode_loop(out: torch.Tensor, head: Head, input_hw) -> np.ndarray:
    """Brute-force reference: darknet's get_yolo_box cell by cell, as python floats."""
    b, _, gh, gw = out.shape
    nc, s = head.classes, head.scale_x_y
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    rows = []
    for bi in range(b):
        for a, (aw, ah) in enumerate(head.head_anchors):
            for y in range(gh):
                for x in range(gw):
                    v = out[bi, a * (5 + nc) : (a + 1) * (5 + nc), y, x].tolist()
                    if head.new_coords:
                        tx, ty, w, h = v[0], v[1], (2 * v[2]) ** 2 * aw, (2 * v[3]) ** 2 * ah
                        rest = v[4:]
                    else:
                        tx, ty, w, h = sig(v[0]), sig(v[1]), math.exp(v[2]) * aw, math.exp(v[3]) * ah
                        rest = [sig(t) for t in v[4:]]
                    cx = (x + tx * s - (s - 1) / 2) / gw * input_hw[1]
                    cy = (y + ty * s - (s - 1) / 2) / gh * input_hw[0]
                    rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, *rest])
    return np.array(rows).reshape(b, -1, 5 + nc)


@pytest.mark.parametrize("new_coords,scale", [(0, 1.0), (0, 1.05), (1, 2.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_heads_matches_cell_loop(new_coords, scale, dtype):
    g = torch.Generator().manual_seed(3)
    anchors = [(10.0, 14.0), (23.0, 27.0), (37.0, 58.0), (81.0, 82.0)]
    heads = [Head([2, 3], anchors, 3, scale, new_coords), Head([0, 1], anchors, 3, scale, new_coords)]
    lo = 0.0 if new_coords else -3.0
    outs = [
        torch.rand(2, 16, 3, 5, generator=g, dtype=dtype) * 3 + lo,
        torch.rand(2, 16, 6, 10, generator=g, dtype=dtype) * 3 + lo,
    ]
    copies = [o.clone() for o in outs]
    dec = decode_heads(outs, heads, (96, 160))
    assert isinstance(dec, DecodedHeads)
    assert dec.boxes.shape == (2, 2 * 15 + 2 * 60, 4) and dec.boxes.dtype == dtype
    ref = np.concatenate([_decode_loop(o, h, (96, 160)) for o, h in zip(outs, heads)], axis=1)
    got = torch.cat([dec.boxes, dec.objectness[..., None], dec.class_probs], -1).double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    assert all(torch.equal(o, c) for o, c in zip(outs, copies))  # inputs untouched


def test_decode_rejects_wrong_channel_count():
    head = Head([0, 1], [(1.0, 1.0), (2.0, 2.0)], classes=80)
    with pytest.raises(ValueError, match="170"):
        decode_head(torch.zeros(1, 255, 4, 4), head, (128, 128))
    with pytest.raises(ValueError, match="2 head outputs but 1"):
        decode_heads([torch.zeros(1, 170, 4, 4)] * 2, [head], (128, 128))


# ------------------------------------------------------------------ against OpenCV's region layer
def test_decode_matches_opencv_yolo_layer(reference):
    cfg = reference / "models" / "yolo-fastest-1.1.cfg"
    weights = reference / "models" / "yolo-fastest-1.1.weights"
    img_path = reference / "images" / "dog.jpg"
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no darknet reader (needs opencv<5)")
    from yolo4.darknet.cfg import read_cfg

    heads = read_cfg(cfg).yolo_layers
    text = cfg.read_text()
    n_sections = [m.group(1) for m in re.finditer(r"^\[(\w+)\]", text, re.M)][1:]
    yolo_idx = [i for i, s in enumerate(n_sections) if s == "yolo"]
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    blob = cv2.dnn.blobFromImage(cv2.imread(str(img_path)), 1 / 255, (320, 320), swapRB=True, crop=False)
    net.setInput(blob)
    names = [f"conv_{i - 1}" for i in yolo_idx] + [f"yolo_{i}" for i in yolo_idx]
    outs = net.forward(names)
    raw, region = outs[: len(heads)], outs[len(heads) :]
    boxes, obj, cls = decode_heads([torch.from_numpy(r) for r in raw], heads, (320, 320))
    mine = torch.cat([xyxy_to_cxcywh(boxes[0]) / 320, obj[0, :, None], obj[0, :, None] * cls[0]], 1).numpy()
    # OpenCV orders rows (y, x, anchor); ours is darknet's (anchor, y, x)
    start, reordered = 0, []
    for r in raw:
        _, ch, gh, gw = r.shape
        na = len(heads[0].mask)
        block = mine[start : start + na * gh * gw].reshape(na, gh, gw, -1).transpose(1, 2, 0, 3)
        reordered.append(block.reshape(gh * gw * na, -1))
        start += na * gh * gw
    mine = np.concatenate(reordered)
    ref = np.concatenate(region)
    np.testing.assert_allclose(mine[:, :5], ref[:, :5], atol=1e-5)
    shown = ref[:, 5:] > 0  # OpenCV zeroes class scores below its region threshold
    assert shown.sum() > 10
    np.testing.assert_allclose(mine[:, 5:][shown], ref[:, 5:][shown], atol=1e-5)


MIXED_HEADS_CFG = """[net]
width=96
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=logistic

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=3
num=6
scale_x_y=2.0
new_coords=1

[route]
layers=-3

[convolutional]
size=1
stride=1
pad=1
filters=24
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=3
num=6
scale_x_y=1.1
"""


def _opencv_raw_and_region(net, n_heads_at: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """OpenCV's [yolo] inputs (the layer before each permute_N) and outputs (yolo_N)."""
    names = list(net.getLayerNames())
    feeds = [names[names.index(f"permute_{i}") - 1] for i in n_heads_at]
    outs = net.forward(feeds + [f"yolo_{i}" for i in n_heads_at])
    return list(outs[: len(n_heads_at)]), list(outs[len(n_heads_at) :])


def _opencv_order(decoded: DecodedHeads, raw: list[np.ndarray], input_hw, n_anchors: int) -> np.ndarray:
    """Our rows as OpenCV's region layer lays them out: (y, x, anchor), normalised cx, cy, w, h,
    objectness, obj * class."""
    h, w = input_hw
    boxes, obj, cls = (t[0] for t in decoded)
    rows = torch.cat(
        [xyxy_to_cxcywh(boxes) / torch.tensor([w, h, w, h], dtype=boxes.dtype), obj[:, None], obj[:, None] * cls], 1
    ).numpy()
    start, out = 0, []
    for r in raw:
        gh, gw = r.shape[2:]
        n = n_anchors * gh * gw
        out.append(rows[start : start + n].reshape(n_anchors, gh, gw, -1).transpose(1, 2, 0, 3).reshape(n, -1))
        start += n
    return np.concatenate(out)


def test_decode_matches_opencv_new_coords_and_scale_x_y(tmp_path):
    """A new_coords=1 head (logistic conv, scale_x_y=2, Scaled-YOLOv4) and a classic head with
    scale_x_y=1.1 (YOLOv4), random darknet weights, against OpenCV's region layer."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no darknet reader (needs opencv<5)")
    from yolo4.darknet import load, read_cfg, save_weights

    cfg, weights = tmp_path / "mixed.cfg", tmp_path / "mixed.weights"
    cfg.write_text(MIXED_HEADS_CFG)
    torch.manual_seed(0)
    save_weights(load(cfg), weights)
    heads = read_cfg(cfg).yolo_layers
    assert [(h.new_coords, h.scale_x_y) for h in heads] == [(1, 2.0), (0, 1.1)]
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32))
    raw, region = _opencv_raw_and_region(net, [4, 7])
    decoded = decode_heads([torch.from_numpy(r) for r in raw], heads, (64, 96))
    for b in range(2):
        one = DecodedHeads(*(t[b : b + 1] for t in decoded))
        mine = _opencv_order(one, [r[b : b + 1] for r in raw], (64, 96), 3)
        ref = np.concatenate([r.reshape(2, -1, 8)[b] for r in region])
        np.testing.assert_allclose(mine[:, :5], ref[:, :5], atol=2e-6)
        shown = ref[:, 5:] > 0  # OpenCV zeroes class scores below its threshold
        assert shown.sum() > 100
        np.testing.assert_allclose(mine[:, 5:][shown], ref[:, 5:][shown], atol=2e-6)


def test_decode_heads_exports_to_onnx(tmp_path):
    """Tracing sees no Python loop over cells: the graph decodes any input of the traced shape."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    anchors = [(10.0, 14.0), (23.0, 27.0), (37.0, 58.0), (81.0, 82.0)]
    heads = [Head([2, 3], anchors, 3, 1.05, 0), Head([0, 1], anchors, 3, 2.0, 1)]

    class Decode(torch.nn.Module):
        def forward(self, a, b):
            return tuple(decode_heads([a, b], heads, (96, 160)))

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 16, 3, 5, generator=g), torch.rand(1, 16, 6, 10, generator=g))
    path = tmp_path / "decode.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Decode(), args, str(path), dynamo=False, input_names=["a", "b"])
    other = (torch.randn(1, 16, 3, 5, generator=g) * 2, torch.rand(1, 16, 6, 10, generator=g))
    got = ort.InferenceSession(str(path)).run(None, {"a": other[0].numpy(), "b": other[1].numpy()})
    for g_, r in zip(got, Decode()(*other)):
        np.testing.assert_allclose(g_, r.numpy(), rtol=1e-5, atol=1e-4)
