"""Box exactness of every transform: boxes drawn as filled rectangles on a blank image
before a transform cover the same pixels (within a pixel of interpolation) as the
transformed boxes after it. Plus the config, the inverse letterbox mapping and multi-scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from yolo4.data.augment import (
    AugmentConfig,
    cutmix,
    eval_sample,
    hsv_adjust,
    mixup,
    mosaic,
    multiscale_batch,
    random_shape,
    subtract_rect,
    train_sample,
)
from yolo4.data.transforms import (
    filter_boxes,
    hflip,
    letterbox,
    letterbox_boxes,
    scale_translate,
    stretch,
    unletterbox_boxes,
)
from yolo4.errors import DataError

BG = 127  # the pad value too, so padding and blends never look like a rectangle
THRESH = 150


def rect_image(hw, boxes) -> np.ndarray:
    """uint8 (H, W, 3) grey image with each integer xyxy box filled white."""
    img = np.full((*hw, 3), BG, np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes, int):
        img[y1:y2, x1:x2] = 255
    return img


def boxes_mask(hw, boxes, touch: bool = False) -> np.ndarray:
    """bool (H, W): pixels whose centre lies inside any box (touch: that overlap any box)."""
    h, w = hw
    yc, xc = np.mgrid[0:h, 0:w] + 0.5
    r = 0.5 if touch else 0.0
    m = np.zeros(hw, bool)
    for x1, y1, x2, y2 in np.asarray(boxes, float).reshape(-1, 4):
        m |= (xc + r > x1) & (xc - r < x2) & (yc + r > y1) & (yc - r < y2) & (x2 > x1) & (y2 > y1)
    return m


def assert_same_pixels(img, boxes, tol: int = 1, thresh: int = THRESH, partly_hidden: bool = False):
    """The white pixels of img and the pixels inside `boxes` agree up to `tol` pixels.

    Every white pixel lies within tol of a box; every box pixel farther than tol from the
    box's edge is white (skipped when boxes may be partly hidden, as after CutMix: then each
    box must instead be the tight box of the white pixels it holds)."""
    white = img[..., 0] > thresh if img.ndim == 3 else img > thresh
    inside = boxes_mask(white.shape, boxes)
    k = np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)
    near_box = cv2.dilate(boxes_mask(white.shape, boxes, touch=True).astype(np.uint8), k).astype(bool)
    # the image border counts as an edge too (a sliver of a box there may be sub-pixel)
    core_inside = cv2.erode(inside.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    assert not (white & ~near_box).any(), f"{(white & ~near_box).sum()} white pixels away from every box"
    if not partly_hidden:
        assert not (core_inside & ~white).any(), f"{(core_inside & ~white).sum()} box pixels not white"
    else:
        for x1, y1, x2, y2 in np.asarray(boxes, float).reshape(-1, 4):
            m = white & boxes_mask(white.shape, [[x1 - tol, y1 - tol, x2 + tol, y2 + tol]])
            if x2 - x1 < 2 * tol + 1 or y2 - y1 < 2 * tol + 1:
                continue
            ys, xs = np.nonzero(m)
            assert len(xs), f"box {(x1, y1, x2, y2)} holds no white pixel"
            assert abs(xs.min() - x1) <= tol + 0.5 and abs(xs.max() + 1 - x2) <= tol + 0.5
            assert abs(ys.min() - y1) <= tol + 0.5 and abs(ys.max() + 1 - y2) <= tol + 0.5
    assert white.sum() > 0


BOXES = np.array([[5, 8, 30, 40], [50, 5, 90, 25], [40, 50, 75, 85], [92, 60, 118, 95]], np.float32)
HW = (100, 120)
CLS = np.arange(4)


def test_helpers_catch_a_wrong_box():
    img = rect_image(HW, BOXES)
    assert_same_pixels(img, BOXES, tol=0)
    with pytest.raises(AssertionError):
        assert_same_pixels(img, BOXES + np.array([3, 0, 3, 0], np.float32))


@pytest.mark.parametrize("fn", [letterbox, stretch])
@pytest.mark.parametrize("new_hw", [(160, 160), (64, 96), (200, 120)])
def test_letterbox_and_stretch(fn, new_hw):
    out, scale, pad = fn(rect_image(HW, BOXES), new_hw)
    assert out.shape == (*new_hw, 3)
    assert_same_pixels(out, letterbox_boxes(BOXES, scale, pad))


def test_letterbox_pads_centred_and_inverse_maps_back():
    out, scale, pad = letterbox(np.zeros((50, 100, 3), np.uint8), (100, 100))
    assert pad == (25, 0) and scale == (1.0, 1.0)
    assert (out[:25] == 127).all() and (out[25:75] == 0).all()
    b = np.array([[10.0, 5.0, 60.0, 45.0]], np.float32)
    there = letterbox_boxes(b, scale, pad)
    np.testing.assert_allclose(there, [[10, 30, 60, 70]])
    np.testing.assert_allclose(unletterbox_boxes(there, scale, pad, (50, 100)), b, atol=1e-5)


def test_unletterbox_torch_and_numpy_agree_and_clip():
    _, scale, pad = letterbox(np.zeros((375, 500, 3), np.uint8), (416, 416))
    b = np.array([[0, 0, 416, 416], [100, 120, 200, 260]], np.float32)
    n = unletterbox_boxes(b, scale, pad, (375, 500))
    t = unletterbox_boxes(torch.from_numpy(b), scale, pad, (375, 500))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), n, rtol=1e-5)
    np.testing.assert_allclose(n[0], [0, 0, 500, 375])  # the padding maps outside and is clipped
    np.testing.assert_allclose(letterbox_boxes(n[1:], scale, pad), b[1:], atol=1e-3)
    assert (b == np.array([[0, 0, 416, 416], [100, 120, 200, 260]])).all()  # input untouched


def test_hflip():
    img = rect_image(HW, BOXES)
    out, b = hflip(img, BOXES)
    assert_same_pixels(out, b, tol=0)
    assert (img == rect_image(HW, BOXES)).all()


@pytest.mark.parametrize(
    "scale_hw,offset_hw",
    [
        ((1.7, 1.7), (-20.0, -35.5)),
        ((0.6, 0.8), (10.0, 3.0)),
        ((1.0, 1.3), (-50.0, 0.0)),
        ((2.5, 2.5), (-100.0, -150.0)),
    ],
)
def test_scale_translate(scale_hw, offset_hw):
    out, b, c = scale_translate(
        rect_image(HW, BOXES), BOXES, CLS, scale_hw, offset_hw, (128, 128), min_size=0, min_visible=0
    )
    assert out.shape == (128, 128, 3) and len(b) == len(c)
    assert_same_pixels(out, b)


def test_mosaic():
    rng = np.random.default_rng(0)
    parts = []
    for k in range(4):
        hw = (int(rng.integers(60, 140)), int(rng.integers(60, 140)))
        bx = np.array([[5, 5, 25, 30], [hw[1] - 30, hw[0] - 35, hw[1] - 4, hw[0] - 6], [30, 32, 52, 55]], np.float32)
        parts.append((rect_image(hw, bx), bx, np.arange(3) + 3 * k))
    for centre in [(64, 64), (30, 100), (100, 20)]:
        img, b, c = mosaic(parts, (128, 128), centre, min_size=0, min_visible=0)
        assert img.shape == (128, 128, 3)
        assert_same_pixels(img, b, tol=0)  # pure copies: exact to the pixel
    img, b, c = mosaic(parts, (128, 128), (64, 64), min_size=0, min_visible=0)
    assert {0, 3}.issubset(set(c.tolist()))  # boxes come from all quadrants, with their classes
    assert len(b) == len(c)


def test_cutmix_shrinks_covered_boxes_exactly():
    a_boxes = np.array([[10, 10, 50, 40], [60, 10, 110, 40], [10, 60, 50, 90]], np.float32)
    b_boxes = np.array([[40, 0, 70, 30], [70, 55, 100, 95]], np.float32)
    a = (rect_image(HW, a_boxes), a_boxes, np.array([0, 1, 2]))
    b = (rect_image(HW, b_boxes), b_boxes, np.array([3, 4]))
    # the rect spans box 0's full height over its right part -> box 0 shrinks to x2 = 30
    img, boxes, cls = cutmix(a, b, (30, 5, 80, 100), min_size=0, min_visible=0)
    assert_same_pixels(img, boxes, tol=0)
    assert [10.0, 10.0, 30.0, 40.0] in boxes.tolist()
    assert sorted(cls.tolist()) == [0, 1, 2, 3, 4]
    # a rect that hides box 2 entirely drops it
    img, boxes, cls = cutmix(a, b, (0, 55, 60, 100), min_size=0, min_visible=0)
    assert 2 not in cls.tolist()
    assert_same_pixels(img, boxes, tol=0)


def test_subtract_rect_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        x1, y1 = rng.integers(0, 40, 2)
        box = np.array([[x1, y1, x1 + rng.integers(1, 30), y1 + rng.integers(1, 30)]], np.float32)
        rx1, ry1 = rng.integers(0, 50, 2)
        rect = (int(rx1), int(ry1), int(rx1 + rng.integers(1, 40)), int(ry1 + rng.integers(1, 40)))
        m = boxes_mask((80, 80), box)
        m[rect[1] : rect[3], rect[0] : rect[2]] = False
        got, area = subtract_rect(box, rect)
        assert area[0] == m.sum()
        if m.any():
            ys, xs = np.nonzero(m)
            np.testing.assert_array_equal(got[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_mixup_keeps_both_box_sets():
    b2 = np.array([[20, 70, 60, 95]], np.float32)
    a = (rect_image(HW, BOXES), BOXES, CLS)
    b = (rect_image(HW, b2), b2, np.array([9]))
    img, boxes, cls = mixup(a, b, 0.5)
    assert cls.tolist() == [0, 1, 2, 3, 9]
    assert_same_pixels(img, boxes, tol=0, thresh=BG + 20)
    assert (a[0] == rect_image(HW, BOXES)).all()


def test_hsv_changes_colour_not_geometry():
    img = rect_image(HW, BOXES)
    img[img[..., 0] == 255] = (200, 60, 40)
    out = hsv_adjust(img, 0.25, 1.3, 1.0)
    assert out.shape == img.shape and not np.array_equal(out, img)
    moved = np.abs(out.astype(int) - img.astype(int)).sum(2) > 0
    assert boxes_mask(HW, BOXES)[moved].all()  # grey has no hue or saturation: only the boxes change
    darker = hsv_adjust(img, 0.0, 1.0, 0.5)
    assert darker.mean() < 0.6 * img.mean()
    np.testing.assert_array_equal(hsv_adjust(img, 0.0, 1.0, 1.0), img)


def test_filter_boxes_drops_small_and_mostly_cut():
    unclipped = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1, 10]], np.float32)
    clipped = np.array([[0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 1, 10]], np.float32)
    b, c = filter_boxes(clipped, np.array([0, 1, 2]), unclipped, min_size=2, min_visible=0.2)
    assert c.tolist() == [0]


# ---------------------------------------------------------------- the random pipeline
class RectDataset:
    """Images of different sizes with white rectangles on grey, for pipeline tests."""

    def __init__(self, n: int = 6):
        rng = np.random.default_rng(5)
        self.items = []
        for _k in range(n):
            hw = (int(rng.integers(80, 200)), int(rng.integers(80, 200)))
            gy, gx = hw[0] // 3, hw[1] // 3
            boxes = np.array(
                [
                    [gx * (j % 3) + 3, gy * (j // 3) + 3, gx * (j % 3 + 1) - 3, gy * (j // 3 + 1) - 3]
                    for j in range(9)
                    if rng.random() < 0.6
                ]
                or [[3, 3, gx - 3, gy - 3]],
                np.float32,
            )
            self.items.append((rect_image(hw, boxes), boxes, np.arange(len(boxes)) % 5))
        self.image_paths = [f"rect{k}.png" for k in range(n)]
        self.image_hw = np.array([it[0].shape[:2] for it in self.items])

    def __len__(self):
        return len(self.items)

    def load(self, i):
        img, b, c = self.items[i]
        return img.copy(), b.copy(), c.copy()


EXACT = dict(min_box_size=0.0, min_box_visible=0.0, hue=0.0, saturation=1.0, exposure=1.0)


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(mosaic=1.0, **EXACT),
        AugmentConfig(mosaic=0.0, jitter=0.3, scale=(0.5, 1.5), letterbox=True, **EXACT),
        AugmentConfig(mosaic=0.0, jitter=0.3, letterbox=False, **EXACT),
        AugmentConfig(mosaic=0.0, jitter=0.0, scale=(1, 1), flip=1.0, **EXACT),
    ],
    ids=["mosaic", "affine-letterbox", "affine-stretch", "flip"],
)
def test_train_pipeline_keeps_boxes_exact(cfg):
    ds = RectDataset()
    for seed in range(12):
        img, boxes, cls, info = train_sample(ds, seed % len(ds), (96, 128), cfg, np.random.default_rng(seed))
        assert img.shape == (96, 128, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and cls.dtype == np.int64 and len(boxes) == len(cls)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
        assert_same_pixels(img, boxes)
        assert info["augmented"] and info["path"].startswith("rect")


def test_train_pipeline_cutmix_keeps_boxes_tight():
    ds = RectDataset()
    cfg = AugmentConfig(mosaic=0.5, cutmix=1.0, **EXACT)
    for seed in range(12):
        img, boxes, cls, _ = train_sample(ds, seed % len(ds), (96, 128), cfg, np.random.default_rng(seed))
        assert_same_pixels(img, boxes, partly_hidden=True)


def test_train_pipeline_mixup_keeps_boxes():
    ds = RectDataset()
    cfg = AugmentConfig(mosaic=0.0, mixup=1.0, **EXACT)
    for seed in range(8):
        img, boxes, cls, _ = train_sample(ds, seed % len(ds), 128, cfg, np.random.default_rng(seed))
        assert_same_pixels(img, boxes, thresh=BG + 20)  # a blended rectangle is at least a quarter white


def test_train_pipeline_is_a_pure_function_of_the_rng():
    ds = RectDataset()
    cfg = AugmentConfig(mixup=0.5, cutmix=0.5)
    a = train_sample(ds, 2, 128, cfg, np.random.default_rng(7))
    b = train_sample(ds, 2, 128, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (ds.load(2)[0] == ds.items[2][0]).all()


def test_eval_sample_maps_back_to_the_original():
    ds = RectDataset()
    img, boxes, cls, info = eval_sample(ds, 1, 160)
    assert_same_pixels(img, boxes)
    back = unletterbox_boxes(boxes, info["scale"], info["pad"], info["orig_hw"])
    np.testing.assert_allclose(back, ds.items[1][1], atol=1e-3)


# ---------------------------------------------------------------- config, shapes, multi-scale
def test_from_darknet_maps_the_knobs():
    cfg = AugmentConfig.from_darknet(
        {
            "mosaic": "1",
            "hue": ".1",
            "saturation": "1.5",
            "exposure": "1.5",
            "jitter": ".3",
            "resize": "1.5",
            "letter_box": "1",
            "random": "1",
        }
    )
    assert (cfg.mosaic, cfg.hue, cfg.saturation, cfg.exposure, cfg.jitter) == (1.0, 0.1, 1.5, 1.5, 0.3)
    assert cfg.scale == pytest.approx((1 / 1.5, 1.5)) and cfg.letterbox and cfg.random_shapes and cfg.flip == 0.5
    bare = AugmentConfig.from_darknet({})  # darknet's own defaults: everything off but flip and jitter .2
    assert (bare.mosaic, bare.mixup, bare.cutmix, bare.hue, bare.saturation, bare.letterbox) == (0, 0, 0, 0, 1, False)
    assert bare.flip == 0.5 and bare.jitter == 0.2
    assert AugmentConfig.from_darknet({"flip": "0", "mixup": "1", "cutmix": "1"}).flip == 0.0
    with pytest.raises(DataError):
        AugmentConfig.from_darknet({"hue": "lots"})
    with pytest.raises(DataError):
        AugmentConfig(mosaic=2.0)
    with pytest.raises(DataError, match="unknown"):
        AugmentConfig().replace(mosiac=1.0)
    assert AugmentConfig().replace(mixup=0.3).mixup == 0.3


def test_random_shape_multiples_of_32():
    rng = np.random.default_rng(0)
    got = {random_shape(416, rng) for _ in range(200)}
    assert all(h % 32 == 0 and w % 32 == 0 and h == w for h, w in got)
    assert min(h for h, _ in got) >= 288 and max(h for h, _ in got) <= 576 and len(got) > 5


def test_multiscale_batch():
    img = rect_image((96, 128), BOXES[:3])
    images = torch.from_numpy(np.stack([img, img[:, ::-1]])).permute(0, 3, 1, 2).float() / 255
    _, fb = hflip(img, BOXES[:3])
    targets = torch.cat(
        [
            torch.cat([torch.zeros(3, 1), torch.zeros(3, 1), torch.from_numpy(BOXES[:3])], 1),
            torch.cat([torch.ones(3, 1), torch.ones(3, 1), torch.from_numpy(fb)], 1),
        ]
    )
    before = targets.clone()
    out, t = multiscale_batch(images, targets, (160, 192))
    assert out.shape == (2, 3, 160, 192) and t.shape == targets.shape
    assert torch.equal(targets, before)  # inputs untouched
    for k in range(2):
        arr = (out[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert_same_pixels(arr, t[t[:, 0] == k, 2:].numpy())
