"""The data-side bag of freebies: Mosaic, CutMix, MixUp, random affine (darknet `jitter`
+ scale), HSV (hue, saturation, exposure), horizontal flip, letterbox / stretch and random
training shapes. NumPy/OpenCV, images uint8 (H, W, 3) RGB, boxes float32 (N, 4) xyxy pixels.

Each transform comes twice: a pure, deterministic function of explicit parameters (what the
box-exactness tests check), and the training pipeline `train_sample` that draws those
parameters from a `numpy.random.Generator`. No function modifies its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import cv2
import numpy as np

from yolo4.data.transforms import (
    FILL,
    _as_hw,
    clip_boxes,
    filter_boxes,
    hflip,
    letterbox,
    scale_boxes,
    scale_translate,
    stretch,
)
from yolo4.errors import DataError

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]  # image uint8 (H, W, 3), boxes (N, 4), class_ids (N,)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation, one field per darknet knob (probabilities where darknet has
    an on/off flag). `AugmentConfig.off()` disables everything but the resize."""

    mosaic: float = 1.0  # [net] mosaic=1: probability of a 4-image mosaic
    mixup: float = 0.0  # [net] mixup=1 -> 0.5: probability of blending in a second sample
    cutmix: float = 0.0  # [net] cutmix=1 -> 0.5: probability of pasting a patch of a second sample
    jitter: float = 0.3  # [yolo] jitter: each crop side moves by up to jitter * the image side
    scale: tuple[float, float] = (0.5, 1.5)  # [yolo] resize=R -> (1/R, R): extra random zoom
    hue: float = 0.1  # [net] hue: shift in [-hue, hue] of the hue circle
    saturation: float = 1.5  # [net] saturation: gain in [1/s, s]
    exposure: float = 1.5  # [net] exposure: value gain in [1/e, e]
    flip: float = 0.5  # [net] flip=1: probability of a left-right mirror
    letterbox: bool = True  # [net] letter_box=1 keeps the aspect ratio; 0 stretches
    random_shapes: bool = False  # [yolo] random=1: a new input size every `random_every` batches
    random_every: int = 10
    random_coef: float = 1.4  # sizes from size / coef to size * coef, multiples of 32
    min_box_size: float = 2.0  # boxes narrower or lower than this (pixels) are dropped
    min_box_visible: float = 0.2  # boxes keeping less than this fraction of their area are dropped

    def __post_init__(self) -> None:
        for name in ("mosaic", "mixup", "cutmix", "flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"augment: {name}={getattr(self, name)} is not a probability in [0, 1]")
        if not 0.0 <= self.jitter < 0.5:
            raise DataError(f"augment: jitter={self.jitter} must be in [0, 0.5)")
        if self.saturation < 1 or self.exposure < 1:
            raise DataError("augment: saturation and exposure are gains >= 1 (1 = off)")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise DataError(f"augment: bad scale range {self.scale}")

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation: only the letterbox resize."""
        return cls(
            mosaic=0.0,
            mixup=0.0,
            cutmix=0.0,
            jitter=0.0,
            scale=(1.0, 1.0),
            hue=0.0,
            saturation=1.0,
            exposure=1.0,
            flip=0.0,
        )

    @classmethod
    def from_darknet(cls, net_options: dict[str, str]) -> AugmentConfig:
        """Build from darknet cfg options (the [net] section, merged with the [yolo] keys
        `jitter`, `resize` and `random` if the caller has them). Missing keys take darknet's
        defaults, not this class's: darknet turns everything off unless asked."""
        o = {k.strip(): str(v).strip() for k, v in net_options.items()}

        def f(key: str, default: float) -> float:
            try:
                return float(o.get(key, default))
            except ValueError as e:
                raise DataError(f"darknet cfg: {key}={o[key]!r} is not a number") from e

        resize = f("resize", 1.0)
        resize = max(resize, 1.0 / resize) if resize > 0 else 1.0
        return cls(
            mosaic=1.0 if f("mosaic", 0) else 0.0,
            mixup=0.5 if f("mixup", 0) else 0.0,
            cutmix=0.5 if f("cutmix", 0) else 0.0,
            jitter=min(f("jitter", 0.2), 0.49),
            scale=(1.0 / resize, resize),
            hue=f("hue", 0.0),
            saturation=max(f("saturation", 1.0), 1.0),
            exposure=max(f("exposure", 1.0), 1.0),
            flip=0.5 if f("flip", 1) else 0.0,
            letterbox=bool(f("letter_box", 0)),
            random_shapes=bool(f("random", 0)),
        )

    def replace(self, **changes) -> AugmentConfig:
        """A copy with some fields changed (unknown names raise DataError)."""
        known = {fl.name for fl in fields(self)}
        bad = set(changes) - known
        if bad:
            raise DataError(f"augment: unknown option(s) {sorted(bad)}; known: {sorted(known)}")
        return type(self)(**{**{k: getattr(self, k) for k in known}, **changes})


# ---------------------------------------------------------------- pure transforms
def hsv_adjust(img: np.ndarray, hue_shift: float, sat_gain: float, val_gain: float) -> np.ndarray:
    """Shift hue by `hue_shift` (fraction of the hue circle) and multiply saturation and
    value. img uint8 (H, W, 3) RGB -> new uint8 (H, W, 3) RGB; boxes are unaffected."""
    if hue_shift == 0 and sat_gain == 1 and val_gain == 1:
        return img.copy()
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))  # OpenCV hue is [0, 180)
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x + hue_shift * 180.0, 180.0).astype(np.uint8)
    lut_s = np.clip(x * sat_gain + 0.5, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * val_gain + 0.5, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def resize_sample(img: np.ndarray, boxes: np.ndarray, new_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image to exactly new_hw = (h, w) (any aspect) with its boxes."""
    h, w = new_hw
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if h < img.shape[0] else cv2.INTER_LINEAR)
    return out, scale_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), (h / img.shape[0], w / img.shape[1]))


def mosaic(
    parts: Sequence[Sample],
    out_hw,
    center_xy: tuple[int, int],
    fill: int = FILL,
    min_size: float = 2.0,
    min_visible: float = 0.2,
) -> Sample:
    """Tile four samples around `center_xy` (darknet / YOLOv4 Mosaic): part 0's bottom-right
    corner, part 1's bottom-left, part 2's top-right and part 3's top-left meet at the
    centre; what falls outside a part's quadrant is cut away.

    Args:
        parts: 4 samples (image uint8 (h_i, w_i, 3), boxes (n_i, 4) xyxy, class_ids (n_i,)).
        out_hw: (H, W) or int; center_xy: (cx, cy) integer pixel, inside the canvas.
    Returns:
        (image uint8 (H, W, 3), boxes float32 (K, 4), class_ids int64 (K,)).
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(parts)}")
    H, W = _as_hw(out_hw)
    cx, cy = int(center_xy[0]), int(center_xy[1])
    canvas = np.full((H, W, 3), fill, np.uint8)
    all_boxes, all_cls = [], []
    for k, (img, boxes, cls) in enumerate(parts):
        h, w = img.shape[:2]
        # the quadrant on the canvas, and the image's offset so that its corner is at the centre
        if k == 0:
            qx1, qy1, qx2, qy2, ox, oy = 0, 0, cx, cy, cx - w, cy - h
        elif k == 1:
            qx1, qy1, qx2, qy2, ox, oy = cx, 0, W, cy, cx, cy - h
        elif k == 2:
            qx1, qy1, qx2, qy2, ox, oy = 0, cy, cx, H, cx - w, cy
        else:
            qx1, qy1, qx2, qy2, ox, oy = cx, cy, W, H, cx, cy
        x1, y1 = max(qx1, ox), max(qy1, oy)  # the part of the quadrant the image covers
        x2, y2 = min(qx2, ox + w), min(qy2, oy + h)
        if x2 <= x1 or y2 <= y1:
            continue
        canvas[y1:y2, x1:x2] = img[y1 - oy : y2 - oy, x1 - ox : x2 - ox]
        moved = scale_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), (1.0, 1.0), (oy, ox))
        clipped = moved.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(x1, x2)
        clipped[:, 1::2] = clipped[:, 1::2].clip(y1, y2)
        b, c = filter_boxes(clipped, cls, moved, min_size, min_visible)
        all_boxes.append(b)
        all_cls.append(c)
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
    cls = np.concatenate(all_cls) if all_cls else np.zeros(0, np.int64)
    return canvas, boxes.astype(np.float32), cls.astype(np.int64)


def mixup(a: Sample, b: Sample, lam: float) -> Sample:
    """Blend two samples of the same size: lam * a + (1 - lam) * b, keeping both box sets."""
    if a[0].shape != b[0].shape:
        raise ValueError(f"mixup needs images of one shape, got {a[0].shape} and {b[0].shape}")
    img = cv2.addWeighted(a[0], float(lam), b[0], 1.0 - float(lam), 0.0)
    return (
        img,
        np.concatenate([a[1], b[1]]).astype(np.float32).reshape(-1, 4),
        np.concatenate([a[2], b[2]]).astype(np.int64),
    )


def subtract_rect(boxes: np.ndarray, rect: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The tight box of each box's part outside `rect`, and that part's area.

    Args:
        boxes: float (N, 4) xyxy; rect: (x1, y1, x2, y2).
    Returns:
        (boxes float32 (N, 4), visible area float32 (N,)); a fully covered box keeps its
        coordinates with area 0.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    rx1, ry1, rx2, ry2 = rect
    iw = (np.minimum(b[:, 2], rx2) - np.maximum(b[:, 0], rx1)).clip(0)
    ih = (np.minimum(b[:, 3], ry2) - np.maximum(b[:, 1], ry1)).clip(0)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - iw * ih
    full_h = (ry1 <= b[:, 1]) & (ry2 >= b[:, 3]) & (iw > 0)  # rect spans the box's height: x shrinks
    full_w = (rx1 <= b[:, 0]) & (rx2 >= b[:, 2]) & (ih > 0)
    left_cut = full_h & (rx1 <= b[:, 0])  # the box's left edge is covered
    right_cut = full_h & (rx2 >= b[:, 2])
    top_cut = full_w & (ry1 <= b[:, 1])
    bottom_cut = full_w & (ry2 >= b[:, 3])
    out = b.copy()
    out[:, 0] = np.where(left_cut & ~right_cut, rx2, b[:, 0])
    out[:, 2] = np.where(right_cut & ~left_cut, rx1, b[:, 2])
    out[:, 1] = np.where(top_cut & ~bottom_cut, ry2, b[:, 1])
    out[:, 3] = np.where(bottom_cut & ~top_cut, ry1, b[:, 3])
    return out.astype(np.float32), area.clip(0).astype(np.float32)


def cutmix(
    a: Sample, b: Sample, rect: tuple[int, int, int, int], min_size: float = 2.0, min_visible: float = 0.2
) -> Sample:
    """Paste the `rect` = (x1, y1, x2, y2) region of sample b into sample a (same size).

    a's boxes shrink to the tight box of their uncovered part (dropped if too little is
    left); b's boxes are clipped to the rect. Returns (image, boxes (K, 4), class_ids (K,))."""
    if a[0].shape != b[0].shape:
        raise ValueError(f"cutmix needs images of one shape, got {a[0].shape} and {b[0].shape}")
    x1, y1, x2, y2 = (int(v) for v in rect)
    img = a[0].copy()
    img[y1:y2, x1:x2] = b[0][y1:y2, x1:x2]
    ab = np.asarray(a[1], np.float32).reshape(-1, 4)
    shrunk, vis = subtract_rect(ab, (x1, y1, x2, y2))
    area0 = (ab[:, 2] - ab[:, 0]) * (ab[:, 3] - ab[:, 1])
    w, h = shrunk[:, 2] - shrunk[:, 0], shrunk[:, 3] - shrunk[:, 1]
    keep = (vis >= min_visible * area0) & (vis > 0) & (w >= min_size) & (h >= min_size)
    bb = np.asarray(b[1], np.float32).reshape(-1, 4)
    inside = bb.copy()
    inside[:, 0::2] = inside[:, 0::2].clip(x1, x2)
    inside[:, 1::2] = inside[:, 1::2].clip(y1, y2)
    kb, kc = filter_boxes(inside, b[2], bb, min_size, min_visible)
    return (
        img,
        np.concatenate([shrunk[keep], kb]).astype(np.float32),
        np.concatenate([np.asarray(a[2], np.int64)[keep], kc]).astype(np.int64),
    )


# ---------------------------------------------------------------- random pipeline
def _random_affine(sample: Sample, out_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """darknet-style jitter crop (each side moves by up to jitter * side), random zoom
    `cfg.scale`, random placement on the canvas; letterboxed or stretched."""
    img, boxes, cls = sample
    h, w = img.shape[:2]
    H, W = out_hw
    pl, pr = rng.uniform(-cfg.jitter, cfg.jitter, 2) * w
    pt, pb = rng.uniform(-cfg.jitter, cfg.jitter, 2) * h
    cw, ch = w - pl - pr, h - pt - pb  # the crop window, source pixels
    zoom = rng.uniform(*cfg.scale)
    if cfg.letterbox:
        sx = sy = min(W / cw, H / ch) * zoom
    else:
        sx, sy = W / cw * zoom, H / ch * zoom
    free_x, free_y = W - cw * sx, H - ch * sy  # negative when the crop is larger than the canvas
    dx = rng.uniform(min(0.0, free_x), max(0.0, free_x)) if cfg.jitter or zoom != 1 else free_x / 2
    dy = rng.uniform(min(0.0, free_y), max(0.0, free_y)) if cfg.jitter or zoom != 1 else free_y / 2
    return scale_translate(
        img, boxes, cls, (sy, sx), (dy - pt * sy, dx - pl * sx), (H, W), FILL, cfg.min_box_size, cfg.min_box_visible
    )


def _mosaic_part(
    sample: Sample,
    k: int,
    centre: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: AugmentConfig,
    rng: np.random.Generator,
) -> Sample:
    """Part k of a mosaic: the sample zoomed (random scale and aspect jitter) and cut down to
    the piece that shows in quadrant k, so that only visible pixels are interpolated."""
    img, boxes, cls = sample
    h, w = img.shape[:2]
    H, W = out_hw
    cx, cy = centre
    r = max(out_hw) / max(h, w) * rng.uniform(*cfg.scale)
    a = rng.uniform(1 - cfg.jitter, 1 + cfg.jitter) / rng.uniform(1 - cfg.jitter, 1 + cfg.jitter)
    nh = max(1, round(h * r / math.sqrt(a)))
    nw = max(1, round(w * r * math.sqrt(a)))
    if nh < h / 2 or nw < w / 2:  # a strong zoom-out: area-average the whole image first (no aliasing)
        img, boxes = resize_sample(img, boxes, (nh, nw))
        h, w = nh, nw
    # the visible window of the zoomed image (its own pixels): it meets the centre at a corner
    qh = min(nh, cy if k < 2 else H - cy)
    qw = min(nw, cx if k in (0, 2) else W - cx)
    y0 = nh - qh if k < 2 else 0
    x0 = nw - qw if k in (0, 2) else 0
    if qh <= 0 or qw <= 0:
        return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return scale_translate(
        img, boxes, cls, (nh / h, nw / w), (-y0, -x0), (qh, qw), FILL, cfg.min_box_size, cfg.min_box_visible
    )


def _base_sample(dataset, index: int, out_hw: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """Mosaic or single-image affine, before mixing, flipping and colour."""
    if cfg.mosaic > 0 and rng.random() < cfg.mosaic:
        ids = [index] + [int(j) for j in rng.integers(0, len(dataset), 3)]
        H, W = out_hw
        centre = (int(rng.uniform(0.25, 0.75) * W), int(rng.uniform(0.25, 0.75) * H))
        parts = [_mosaic_part(dataset.load(j), k, centre, out_hw, cfg, rng) for k, j in enumerate(ids)]
        return mosaic(parts, out_hw, centre, FILL, cfg.min_box_size, cfg.min_box_visible)
    return _random_affine(dataset.load(index), out_hw, cfg, rng)


def train_sample(
    dataset, index: int, img_hw, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One augmented training sample from `dataset` (anything with `load(i)` and `len`).

    Returns:
        (image uint8 (H, W, 3) RGB, boxes float32 (N, 4) xyxy input pixels, class_ids int64
        (N,), info {path, orig_hw, scale: None, pad: None, augmented: True}).
    """
    out_hw = _as_hw(img_hw)
    img, boxes, cls = _base_sample(dataset, index, out_hw, cfg, rng)
    if cfg.mixup > 0 and rng.random() < cfg.mixup:
        other = _base_sample(dataset, int(rng.integers(len(dataset))), out_hw, cfg, rng)
        img, boxes, cls = mixup((img, boxes, cls), other, float(rng.beta(8.0, 8.0)))
    elif cfg.cutmix > 0 and rng.random() < cfg.cutmix:
        other = _base_sample(dataset, int(rng.integers(len(dataset))), out_hw, cfg, rng)
        H, W = out_hw
        lam = rng.uniform(0.3, 0.7)  # fraction of the area kept from the first sample
        rw, rh = int(W * math.sqrt(1 - lam)), int(H * math.sqrt(1 - lam))
        x1, y1 = int(rng.integers(0, W - rw + 1)), int(rng.integers(0, H - rh + 1))
        img, boxes, cls = cutmix(
            (img, boxes, cls), other, (x1, y1, x1 + rw, y1 + rh), cfg.min_box_size, cfg.min_box_visible
        )
    if cfg.flip > 0 and rng.random() < cfg.flip:
        img, boxes = hflip(img, boxes)
    if cfg.hue or cfg.saturation != 1 or cfg.exposure != 1:
        s = cfg.saturation ** rng.uniform(-1, 1)
        v = cfg.exposure ** rng.uniform(-1, 1)
        img = hsv_adjust(img, rng.uniform(-cfg.hue, cfg.hue), s, v)
    path = dataset.image_paths[index] if hasattr(dataset, "image_paths") else index
    orig = tuple(int(v) for v in dataset.image_hw[index]) if hasattr(dataset, "image_hw") else None
    info = {"path": str(path), "orig_hw": orig, "scale": None, "pad": None, "augmented": True}
    return img, boxes.astype(np.float32).reshape(-1, 4), cls.astype(np.int64), info


def eval_sample(
    dataset, index: int, img_hw, letterbox_resize: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One unaugmented sample, letterboxed (or stretched) to img_hw.

    Returns:
        (image uint8 (H, W, 3), boxes float32 (N, 4) in input pixels, class_ids int64 (N,),
        info {path, orig_hw, scale (sy, sx), pad (top, left), augmented: False}); map
        predictions back with `transforms.unletterbox_boxes(boxes, scale, pad, orig_hw)`.
    """
    img, boxes, cls = dataset.load(index)
    out, scale, pad = (letterbox if letterbox_resize else stretch)(img, _as_hw(img_hw))
    moved = scale_boxes(boxes, scale, pad)
    b, c = filter_boxes(clip_boxes(moved, out.shape[:2]), cls, moved, 0.0, 0.0)
    info = {
        "path": str(dataset.image_paths[index]),
        "orig_hw": tuple(img.shape[:2]),
        "scale": scale,
        "pad": pad,
        "augmented": False,
    }
    return out, b, c, info


def random_shape(base_hw, rng: np.random.Generator, coef: float = 1.4, stride: int = 32) -> tuple[int, int]:
    """darknet `random=1`: a new (H, W) in [base / coef, base * coef], multiples of `stride`
    (the aspect of base_hw is kept)."""
    H, W = _as_hw(base_hw)
    f = rng.uniform(1.0 / coef, coef)
    return (max(stride, int(round(H * f / stride)) * stride), max(stride, int(round(W * f / stride)) * stride))


def multiscale_batch(images, targets, new_hw):
    """Resize a batch to a new input size (random training shapes).

    Args:
        images: Tensor[B, 3, H, W] float; targets: Tensor[M, 6] rows
            (batch_index, class_id, x1, y1, x2, y2) in input pixels; new_hw: (H', W') or int.
    Returns:
        (Tensor[B, 3, H', W'], Tensor[M, 6]) new tensors; boxes scaled by (W'/W, H'/H).
    """
    import torch.nn.functional as F

    nh, nw = _as_hw(new_hw)
    h, w = images.shape[-2:]
    if (nh, nw) == (h, w):
        return images.clone(), targets.clone()
    out = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
    t = targets.clone()
    t[:, 2:6] = scale_boxes(targets[:, 2:6], (nh / h, nw / w))
    return out, t
