"""Geometric primitives shared by training, validation and inference: letterbox / stretch
resizing, the mapping of boxes into and back out of the network input, flips and
scale-translate warps, and the clip-and-drop rule that keeps boxes exact.

Coordinates are pixel *edges*: pixel column i spans [i, i + 1), so an image of width W
spans [0, W] and a box (x1, y1, x2, y2) covers the pixels whose centres lie inside it.
Every resize here maps edge coordinates with x' = x * sx + tx exactly (OpenCV's resize and
warpAffine use half-pixel centres, which this module accounts for).
"""

from __future__ import annotations

import cv2
import numpy as np

FILL = 127  # darknet pads with 0.5 grey


def _is_tensor(x) -> bool:
    return hasattr(x, "new_tensor")


def scale_boxes(boxes, scale_hw: tuple[float, float], offset_hw: tuple[float, float] = (0.0, 0.0)):
    """x' = x * sx + ox, y' = y * sy + oy on xyxy boxes (..., 4), NumPy or torch; returns a
    new array/tensor of the same type."""
    sy, sx = (float(v) for v in scale_hw)
    oy, ox = (float(v) for v in offset_hw)
    if _is_tensor(boxes):
        return boxes * boxes.new_tensor([sx, sy, sx, sy]) + boxes.new_tensor([ox, oy, ox, oy])
    b = np.asarray(boxes)
    dt = b.dtype if np.issubdtype(b.dtype, np.floating) else np.float32
    return (b * np.array([sx, sy, sx, sy], dt) + np.array([ox, oy, ox, oy], dt)).astype(dt)


def clip_boxes(boxes, hw: tuple[float, float]):
    """Clip xyxy boxes (..., 4) to an image of size hw = (height, width); returns a copy."""
    h, w = hw
    out = boxes.clone() if _is_tensor(boxes) else np.array(boxes, copy=True)
    out[..., 0::2] = out[..., 0::2].clip(0, w)
    out[..., 1::2] = out[..., 1::2].clip(0, h)
    return out


def _as_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def letterbox(img: np.ndarray, new_hw, fill: int = FILL) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to `new_hw` (darknet `letter_box=1`).

    Args:
        img: uint8 (h, w, C). new_hw: (H, W) or an int for a square.
    Returns:
        (image uint8 (H, W, C), scale (sy, sx), pad (top, left)) such that a point of the
        original maps to x' = x * sx + left, y' = y * sy + top. sy and sx differ only by the
        rounding of the resized size (they are the exact scales used).
    """
    H, W = _as_hw(new_hw)
    h, w = img.shape[:2]
    r = min(H / h, W / w)
    nh, nw = max(1, min(H, round(h * r))), max(1, min(W, round(w * r)))
    top, left = (H - nh) // 2, (W - nw) // 2
    out = np.full((H, W) + img.shape[2:], fill, img.dtype)
    resized = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out[top : top + nh, left : left + nw] = resized.reshape(nh, nw, *img.shape[2:])
    return out, (nh / h, nw / w), (top, left)


def stretch(img: np.ndarray, new_hw) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize to `new_hw` ignoring the aspect ratio (darknet's default, `letter_box=0`).

    Returns (image uint8 (H, W, C), scale (sy, sx), pad (0, 0)), same contract as letterbox."""
    H, W = _as_hw(new_hw)
    h, w = img.shape[:2]
    out = img.copy() if (h, w) == (H, W) else cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    return out.reshape(H, W, *img.shape[2:]), (H / h, W / w), (0, 0)


def letterbox_boxes(boxes, scale, pad):
    """Map xyxy boxes (..., 4) of the original image into the letterboxed/stretched input.

    scale: (sy, sx) or one float; pad: (top, left). NumPy or torch in, same type out."""
    s = (scale, scale) if np.isscalar(scale) else scale
    return scale_boxes(boxes, s, pad)


def unletterbox_boxes(boxes, scale, pad, orig_hw: tuple[int, int]):
    """Inverse of letterbox_boxes: xyxy boxes (..., 4) in network-input pixels -> original
    image pixels, clipped to orig_hw = (height, width). NumPy or torch in, same type out."""
    sy, sx = (scale, scale) if isinstance(scale, (int, float)) else (float(scale[0]), float(scale[1]))
    top, left = pad
    out = scale_boxes(boxes, (1.0 / sy, 1.0 / sx), (-top / sy, -left / sx))
    return clip_boxes(out, orig_hw)


def hflip(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right. img (H, W, C); boxes float (N, 4) xyxy. Returns new arrays."""
    w = img.shape[1]
    out = np.ascontiguousarray(img[:, ::-1])
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return out, np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1).astype(np.float32)


def filter_boxes(
    boxes: np.ndarray, class_ids: np.ndarray, unclipped: np.ndarray, min_size: float = 2.0, min_visible: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Drop boxes that became too small or mostly cut away.

    Args:
        boxes: float (N, 4) xyxy after clipping; class_ids: (N,);
        unclipped: float (N, 4) the same boxes before clipping (same scale);
        min_size: minimum width and height in pixels; min_visible: minimum fraction of the
        unclipped area that must remain.
    Returns:
        (boxes float32 (K, 4), class_ids int64 (K,)) kept, K <= N.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    u = np.asarray(unclipped, np.float32).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    area0 = (u[:, 2] - u[:, 0]) * (u[:, 3] - u[:, 1])
    keep = (w >= min_size) & (h >= min_size) & (w * h >= min_visible * np.maximum(area0, 1e-9))
    return b[keep], np.asarray(class_ids, np.int64).reshape(-1)[keep]


def scale_translate(
    img: np.ndarray,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    scale_hw: tuple[float, float],
    offset_hw: tuple[float, float],
    out_hw,
    fill: int = FILL,
    min_size: float = 2.0,
    min_visible: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp with x' = x * sx + ox, y' = y * sy + oy onto an `out_hw` canvas (uncovered
    pixels = fill); boxes follow exactly, are clipped to the canvas and filtered.

    Args:
        img uint8 (h, w, C); boxes float (N, 4) xyxy; class_ids (N,); scale_hw (sy, sx);
        offset_hw (oy, ox); out_hw (H, W) or int.
    Returns:
        (image uint8 (H, W, C), boxes float32 (K, 4), class_ids int64 (K,)).
    """
    H, W = _as_hw(out_hw)
    sy, sx = scale_hw
    oy, ox = offset_hw
    # OpenCV maps pixel centres: centre c = edge - 0.5, so c' = s * c + (o + 0.5 * s - 0.5)
    m = np.array([[sx, 0, ox + 0.5 * sx - 0.5], [0, sy, oy + 0.5 * sy - 0.5]], np.float64)
    c = img.shape[2] if img.ndim == 3 else 1
    out = cv2.warpAffine(
        img, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * c
    )
    out = out.reshape(H, W, *img.shape[2:])
    moved = scale_boxes(np.asarray(boxes, np.float32).reshape(-1, 4), (sy, sx), (oy, ox))
    b, cls = filter_boxes(clip_boxes(moved, (H, W)), class_ids, moved, min_size, min_visible)
    return out, b, cls
