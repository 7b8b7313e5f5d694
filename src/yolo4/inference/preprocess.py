"""Pre-processing: resize RGB uint8 images to the network input (`stretch`, darknet's default,
or `letterbox`, the cfg's `letter_box=1`) and map boxes back (`ResizeInfo`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from yolo4.data import transforms

RESIZE_NAMES = ("stretch", "letterbox")
LETTERBOX_GRAY = transforms.FILL  # 127, darknet's 0.5 gray


# ================================================================== pre-processing
@dataclass(frozen=True)
class ResizeInfo:
    """How one image was mapped to the network input: input = original * scale + pad.

    orig_hw and input_hw are (height, width); scale_xy and pad_xy are (x, y).
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale_xy: tuple[float, float]
    pad_xy: tuple[float, float]

    def to_original(self, boxes: Tensor) -> Tensor:
        """Boxes Tensor[N, 4] xyxy in input pixels -> original-image pixels, clipped to the image."""
        sx, sy = self.scale_xy
        px, py = self.pad_xy
        return transforms.unletterbox_boxes(boxes, (sy, sx), (py, px), self.orig_hw)

    def to_input(self, boxes: Tensor) -> Tensor:
        """Boxes Tensor[N, 4] xyxy in original-image pixels -> network-input pixels."""
        sx, sy = self.scale_xy
        px, py = self.pad_xy
        return transforms.letterbox_boxes(boxes, (sy, sx), (py, px))


def stretch(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, ResizeInfo]:
    """Plain resize to (height, width), aspect not kept (darknet's default, OpenCV's blobFromImage).

    Args:
        image: uint8 (H, W, 3). input_hw: (height, width).
    Returns:
        uint8 (input_h, input_w, 3) and its ResizeInfo.
    """
    out, (sy, sx), (top, left) = transforms.stretch(image, input_hw)
    return out, ResizeInfo(
        (image.shape[0], image.shape[1]), (input_hw[0], input_hw[1]), (sx, sy), (float(left), float(top))
    )


def letterbox(
    image: np.ndarray, input_hw: tuple[int, int], pad_value: int = LETTERBOX_GRAY
) -> tuple[np.ndarray, ResizeInfo]:
    """Resize keeping the aspect ratio, centred on a gray canvas (darknet's `letter_box=1`;
    the same `yolo4.data.transforms.letterbox` that training and validation use).

    Args:
        image: uint8 (H, W, 3). input_hw: (height, width).
    Returns:
        uint8 (input_h, input_w, 3) and its ResizeInfo.
    """
    out, (sy, sx), (top, left) = transforms.letterbox(image, input_hw, fill=pad_value)
    return out, ResizeInfo(
        (image.shape[0], image.shape[1]), (input_hw[0], input_hw[1]), (sx, sy), (float(left), float(top))
    )


RESIZERS: dict[str, Callable[[np.ndarray, tuple[int, int]], tuple[np.ndarray, ResizeInfo]]] = {
    "stretch": stretch,
    "letterbox": letterbox,
}


def preprocess(
    images: Sequence[np.ndarray], input_hw: tuple[int, int], resize: str = "stretch", device: str | torch.device = "cpu"
) -> tuple[Tensor, list[ResizeInfo]]:
    """Resize a batch of RGB uint8 images (H_i, W_i, 3) to the network input.

    Returns:
        float Tensor[B, 3, H, W] in [0, 1] on `device`, and one ResizeInfo per image.
    """
    resize_fn = RESIZERS[resize]
    done = [resize_fn(img, input_hw) for img in images]
    batch = np.stack([d[0] for d in done])  # (B, H, W, 3) uint8
    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    return x.contiguous(), [d[1] for d in done]
