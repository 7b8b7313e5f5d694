"""Boxes, labels and scores drawn on images (OpenCV, RGB uint8 arrays)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour for a class id (golden-ratio hue walk)."""
    h = (int(class_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    class_ids: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray | None = None,
    names: Sequence[str] | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Return a copy of `image` with labelled boxes drawn on it.

    Args:
        image: uint8 array (H, W, 3), RGB.
        boxes: float array (N, 4), xyxy in the image's pixels.
        class_ids: (N,) integer class ids.
        scores: optional (N,) confidences, printed after the class name.
        names: optional class names indexed by class id.
    Returns:
        uint8 array (H, W, 3), RGB; the input is not modified.
    """
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    t = thickness or max(1, round(0.002 * (h + w)))
    font_scale = max(0.35, t / 3)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    for i, box in enumerate(boxes):
        c = int(class_ids[i])
        label = names[c] if names is not None and 0 <= c < len(names) else str(c)
        if scores is not None:
            label = f"{label} {float(scores[i]):.2f}"
        _labelled_box(out, box, label, class_color(c), t, font_scale)
    return out


def _labelled_box(
    out: np.ndarray, box: np.ndarray, label: str, color: tuple[int, int, int], t: int, font_scale: float
) -> None:
    """Draw one xyxy box and its label (white on the box colour) on `out`, in place."""
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    p1 = (int(round(x1)), int(round(y1)))
    p2 = (int(round(x2)), int(round(y2)))
    cv2.rectangle(out, p1, p2, color, t, cv2.LINE_AA)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, t - 1))
    ty = p1[1] - 2 if p1[1] - th - base - 2 >= 0 else p1[1] + th + base + 2
    tx = max(0, min(p1[0], w - tw - 3))  # keep the label inside the image
    cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 2, ty + 2), color, -1)
    cv2.putText(
        out,
        label,
        (tx + 1, ty - base + 1),
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        (255, 255, 255),
        max(1, t - 1),
        cv2.LINE_AA,
    )


def draw_tracks(
    image: np.ndarray,
    boxes: np.ndarray,
    track_ids: Sequence[int] | np.ndarray,
    class_ids: Sequence[int] | np.ndarray,
    names: Sequence[str] | None = None,
    trails: dict[int, Sequence[tuple[float, float]]] | None = None,
) -> np.ndarray:
    """Return a copy of `image` with tracked boxes labelled "#id class", one colour per track id,
    and each track's trail (its recent box centres, oldest first) as a line.

    Args:
        image: uint8 array (H, W, 3), RGB. boxes: float array (N, 4), xyxy in the image's pixels.
        track_ids: (N,) persistent ids. class_ids: (N,) class ids. names: class names by id.
        trails: per track id, a sequence of (x, y) points.
    Returns:
        uint8 array (H, W, 3), RGB; the input is not modified.
    """
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    t = max(1, round(0.002 * (h + w)))
    font_scale = max(0.35, t / 3)
    for tid, points in (trails or {}).items():
        if len(points) > 1:
            pts = np.round(np.asarray(points, np.float32)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [pts], False, class_color(int(tid)), t, cv2.LINE_AA)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    for box, tid, c in zip(boxes, track_ids, class_ids):
        c = int(c)
        name = names[c] if names is not None and 0 <= c < len(names) else str(c)
        _labelled_box(out, box, f"#{int(tid)} {name}", class_color(int(tid)), t, font_scale)
    return out
