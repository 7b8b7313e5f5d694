"""Darknet / YOLO txt labels: one `image.txt` per image, lines `class cx cy w h`, all
normalised to [0, 1] by the image's width and height (a segmentation line `class x1 y1 x2 y2
...` counts as the box of its polygon). Labels live in a `labels/` folder
parallel to `images/` (or `JPEGImages/`), or beside the image (darknet's two rules)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yolo4.data.formats.common import IndexBuilder, LabelIndex, image_hw, inside
from yolo4.data.names import read_names
from yolo4.errors import DataError

__all__ = ["find_label", "label_path_candidates", "parse_yolo_label", "read_image_list", "read_names", "read_yolo"]
MAX_CLASS_ID = 2**31 - 1


def label_path_candidates(image: Path) -> list[Path]:
    """Where darknet looks for an image's label file, in order."""
    parts = list(image.parts)
    out = []
    for folder in ("images", "JPEGImages"):
        if folder in parts:
            k = len(parts) - 1 - parts[::-1].index(folder)  # the last such folder
            out.append(Path(*parts[:k], "labels", *parts[k + 1 :]).with_suffix(".txt"))
    out.append(image.with_suffix(".txt"))
    return out


def find_label(image: Path) -> Path | None:
    for p in label_path_candidates(image):
        if p.is_file():
            return p
    return None


def parse_yolo_label(text: str, path: Path, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Parse one label file.

    Returns:
        boxes float (N, 4) xyxy pixels, class ids (N,), per-box locations "file:line", and
        syntax problems (each makes the image unusable).
    """
    h, w = hw
    rows, where, problems = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        polygon = len(fields) >= 7 and len(fields) % 2 == 1  # "class x1 y1 x2 y2 x3 y3 ..." (segments)
        if len(fields) != 5 and not polygon:
            problems.append(f"{path}:{n}: expected 5 values 'class cx cy w h', got {len(fields)}")
            continue
        try:
            c, *v = (float(x) for x in fields)
        except ValueError:
            problems.append(f"{path}:{n}: not a number in {line.strip()!r}")
            continue
        if not math.isfinite(c) or c != int(c):
            problems.append(f"{path}:{n}: class id {fields[0]!r} is not an integer")
            continue
        if not 0 <= c <= MAX_CLASS_ID:
            problems.append(f"{path}:{n}: class id {fields[0]!r} is out of range")
            continue
        if polygon:  # a segmentation label: its box is the polygon's extent
            xs, ys = v[0::2], v[1::2]
            rows.append((c, min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h))
        else:
            cx, cy, bw, bh = v
            rows.append((c, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
        where.append(f"{path}:{n}")
    a = np.asarray(rows, np.float64).reshape(-1, 5)
    return a[:, 1:], a[:, 0].astype(np.int64), where, problems


def read_yolo(images: list[Path], num_classes: int | None, progress: bool = True) -> LabelIndex:
    """Index `images` and their YOLO txt labels, skipping (and listing) unusable ones.

    An image without a label file is a background image (no boxes), as in darknet.
    """
    b = IndexBuilder()
    for img in tqdm(
        images, desc="indexing labels", unit="img", disable=not progress or len(images) < 2000, leave=False
    ):
        hw = image_hw(img)
        if isinstance(hw, str):
            b.skip(hw)
            continue
        label = find_label(img)
        if label is None:
            b.add(img, hw, np.zeros((0, 4)), np.zeros(0))
            continue
        try:
            text = label.read_text()
        except (OSError, UnicodeDecodeError) as e:
            b.skip(f"{label}: unreadable label file ({type(e).__name__}: {e})")
            continue
        boxes, cls, where, problems = parse_yolo_label(text, label, hw)
        b.add_checked(img, hw, boxes, cls, num_classes, where, problems)
    return b.build()


def read_image_list(path: Path, bases: list[Path]) -> tuple[list[Path], list[str]]:
    """Image paths listed in a darknet `train.txt`, one per line.

    A relative path is tried against each of `bases` in turn; one found nowhere is returned
    against the first base, so that the reader reports it as missing. A relative path whose
    `..` climb out of every base (`../../etc/passwd`) is not followed: it is listed as a
    problem naming the list file and line. Absolute paths are taken as written (darknet's
    lists are often absolute).
    Returns:
        (image paths, problems).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read image list ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (an image list holds one image path a line)") from None
    out, problems = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        ln = raw.strip()
        if not ln or ln.startswith("#"):
            continue
        if "\x00" in ln:
            problems.append(f"{path}:{n}: not a path (it holds a NUL byte)")
            continue
        p = Path(ln).expanduser()
        if not p.is_absolute():
            cands = [base / p for base in bases if inside(base / p, base)]
            if not cands:
                problems.append(f"{path}:{n}: {ln} leads outside the dataset folder; not followed")
                continue
            p = next((c for c in cands if c.exists()), cands[0])
        out.append(p)
    return out, problems
