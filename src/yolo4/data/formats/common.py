"""What every reader shares: the label index it returns, image discovery, header reads and
box validation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# A box may overshoot the image by this fraction of its side before it counts as outside
# the image (converters often write 1.0000001); within the tolerance it is clipped.
EDGE_TOLERANCE = 0.01


@dataclass
class LabelIndex:
    """The labels of a set of images, one entry per *usable* image.

    image_paths: N paths; image_hw: int64 (N, 2) (height, width); boxes: N float32 arrays
    (n_i, 4) xyxy pixels; class_ids: N int64 arrays (n_i,); problems: one line per skipped
    image or ignored annotation, each naming its file.
    """

    image_paths: list[Path] = field(default_factory=list)
    image_hw: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    boxes: list[np.ndarray] = field(default_factory=list)
    class_ids: list[np.ndarray] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    num_skipped: int = 0  # images dropped because of a problem

    def __len__(self) -> int:
        return len(self.image_paths)

    def select(self, indices: list[int] | np.ndarray) -> LabelIndex:
        """A new index holding entries `indices` (problems are carried over)."""
        idx = [int(i) for i in indices]
        return LabelIndex(
            [self.image_paths[i] for i in idx],
            self.image_hw[idx].reshape(-1, 2),
            [self.boxes[i] for i in idx],
            [self.class_ids[i] for i in idx],
            list(self.problems),
            self.num_skipped,
        )


class IndexBuilder:
    """Collects entries and problems while a reader walks a source."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.hw: list[tuple[int, int]] = []
        self.boxes: list[np.ndarray] = []
        self.classes: list[np.ndarray] = []
        self.problems: list[str] = []
        self.skipped = 0

    def add(self, path: Path, hw: tuple[int, int], boxes: np.ndarray, class_ids: np.ndarray) -> None:
        self.paths.append(path)
        self.hw.append((int(hw[0]), int(hw[1])))
        self.boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        self.classes.append(np.asarray(class_ids, np.int64).reshape(-1))

    def add_checked(
        self,
        path: Path,
        hw: tuple[int, int],
        boxes,
        class_ids,
        num_classes: int | None,
        where: list[str],
        problems: list[str],
        name: str | None = None,
    ) -> None:
        """Add one image after `check_boxes`, or skip it listing every problem (the reader's
        own `problems` first). boxes: (N, 4) xyxy pixels; class_ids: (N,); name: for messages."""
        if not problems:
            boxes, class_ids, problems = check_boxes(
                np.asarray(boxes, np.float64).reshape(-1, 4),
                np.asarray(class_ids, np.int64).reshape(-1),
                hw,
                num_classes,
                where,
            )
        if problems:
            self.skip("; ".join(problems) + f" -> skipped {name or path.name}")
        else:
            self.add(path, hw, boxes, class_ids)

    def skip(self, problem: str) -> None:
        """Record a problem that makes an image unusable."""
        self.problems.append(problem)
        self.skipped += 1

    def note(self, problem: str) -> None:
        """Record a problem that drops one annotation but keeps its image."""
        self.problems.append(problem)

    def build(self) -> LabelIndex:
        hw = np.asarray(self.hw, np.int64).reshape(-1, 2)
        return LabelIndex(self.paths, hw, self.boxes, self.classes, self.problems, self.skipped)


def list_images(folder: Path) -> list[Path]:
    """All image files under `folder` (recursive), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath, f) for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(out)


def image_hw(path: Path) -> tuple[int, int] | str:
    """(height, width) of an image read from its header, or a problem string."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        return f"{path}: image file is missing"
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"{path}: corrupt or unreadable image ({type(e).__name__}: {e})"
    if w <= 0 or h <= 0:
        return f"{path}: image has size {w}x{h}"
    return h, w


def check_boxes(
    boxes: np.ndarray, class_ids: np.ndarray, hw: tuple[int, int], num_classes: int | None, where: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate boxes of one image; clip the ones that overshoot within EDGE_TOLERANCE.

    Args:
        boxes: float (N, 4) xyxy pixels; class_ids: int (N,); hw: (height, width);
        num_classes: valid ids are [0, num_classes) (None: any id >= 0);
        where: N strings naming each box's file and line, for the problem messages.
    Returns:
        (boxes float32 (N, 4) clipped, class_ids int64 (N,), problems). Any problem makes the
        whole image unusable; the caller skips it.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids).reshape(-1)
    h, w = hw
    problems = []
    tol_x, tol_y = EDGE_TOLERANCE * w, EDGE_TOLERANCE * h
    for k, ((x1, y1, x2, y2), c) in enumerate(zip(boxes.tolist(), class_ids.tolist())):
        if not all(np.isfinite([x1, y1, x2, y2])):
            problems.append(f"{where[k]}: box has a non-finite coordinate")
        elif c < 0 or (num_classes is not None and c >= num_classes):
            n = "?" if num_classes is None else num_classes
            problems.append(f"{where[k]}: class id {c} out of range [0, {n})")
        elif x2 <= x1 or y2 <= y1:
            problems.append(f"{where[k]}: degenerate box xyxy=({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})")
        elif x1 < -tol_x or y1 < -tol_y or x2 > w + tol_x or y2 > h + tol_y:
            problems.append(f"{where[k]}: box xyxy=({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}) outside the {w}x{h} image")
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    if not problems and len(out) and ((out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])).any():
        problems.append(f"{where[0].rsplit(':', 1)[0]}: a box is degenerate after clipping to the image")
    return out.astype(np.float32), class_ids.astype(np.int64), problems
