"""A grid of images with their boxes, for looking at what a network is fed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from yolo4.viz.draw import draw_boxes


def draw_grid(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    names: Sequence[str] | None = None,
    cols: int | None = None,
    cell: int = 320,
    titles: Sequence[str] | None = None,
    gap: int = 4,
) -> np.ndarray:
    """Draw samples (with their labelled boxes) side by side.

    Args:
        samples: (image uint8 (H, W, 3) RGB, boxes float (N, 4) xyxy pixels, class_ids (N,)).
        names: class names for the labels; cols: columns (default: about square);
        cell: side of each square cell in pixels (images are letterboxed into it);
        titles: optional caption per sample, drawn at the cell's bottom-left.
    Returns:
        uint8 (rows * (cell + gap) + gap, cols * (cell + gap) + gap, 3) RGB.
    """
    n = len(samples)
    if n == 0:
        return np.full((cell, cell, 3), 255, np.uint8)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (cell + gap) + gap, cols * (cell + gap) + gap, 3), 255, np.uint8)
    for k, (img, boxes, cls) in enumerate(samples):
        h, w = img.shape[:2]
        r = cell / max(h, w)
        nh, nw = max(1, round(h * r)), max(1, round(w * r))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
        b = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(r)
        drawn = draw_boxes(small, b, np.asarray(cls).reshape(-1), names=names, thickness=1)
        y0 = gap + (k // cols) * (cell + gap) + (cell - nh) // 2
        x0 = gap + (k % cols) * (cell + gap) + (cell - nw) // 2
        out[y0 : y0 + nh, x0 : x0 + nw] = drawn
        if titles is not None and k < len(titles):
            ty = gap + (k // cols) * (cell + gap) + cell - 6
            tx = gap + (k % cols) * (cell + gap) + 4
            cv2.putText(out, str(titles[k]), (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, str(titles[k]), (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out
