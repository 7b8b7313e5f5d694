"""Class names: darknet's COCO table and `.names` files (one class name a line)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from yolo4.errors import DataError

log = logging.getLogger("yolo4.data")

COCO_NAMES = (
    "person",
    "bicycle",
    "car",
    "motorbike",
    "aeroplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "sofa",
    "pottedplant",
    "bed",
    "diningtable",
    "toilet",
    "tvmonitor",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)  # darknet's data/coco.names, the order of every COCO-trained darknet model


def read_names(path: str | os.PathLike) -> list[str]:
    """A darknet .names file (or classes.txt): one class name a line, blank lines ignored.

    Raises:
        DataError naming the file: unreadable, not UTF-8 text (a .weights file passed by mistake),
        or without names.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a class-names file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read class names ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file of class names (byte {e.start} is not UTF-8)") from None
    if "\x00" in text:
        raise DataError(f"{path}: not a text file of class names (it holds NUL bytes)")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names in it")
    seen: dict[str, int] = {}
    for k, n in enumerate(names):
        if n in seen:
            log.warning("%s: class %d and class %d are both named %r", path, seen[n], k, n)
        seen.setdefault(n, k)
    return names
