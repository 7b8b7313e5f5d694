"""What every reader shares: the label index it returns, image discovery, header reads, paths
that must stay inside the dataset, and box validation."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolo4.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# Images with more pixels than this are refused before they are decoded (a 1 MB PNG can hold
# 400 million pixels: a "decompression bomb"). PIL's own limit, about 13,400 x 13,400.
MAX_IMAGE_PIXELS = 178_956_970

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
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath, f) for f in filenames if Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(out)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels.

    hw: (height, width) of the stored pixels; format: PIL's name ("JPEG", "PNG", ...); mode:
    PIL's pixel mode ("RGB", "L", "CMYK", "I;16", "RGBA", "P", ...); orientation: the EXIF
    orientation tag, 1 (as stored) to 8; 5-8 swap width and height when applied.
    """

    hw: tuple[int, int]
    format: str
    mode: str
    orientation: int = 1

    @property
    def swaps_axes(self) -> bool:
        return self.orientation in (5, 6, 7, 8)


def _orientation(im) -> int:
    """The EXIF orientation of an open PIL image, without decoding it (1 when absent or unreadable)."""
    from PIL import Image

    try:
        if im.format == "TIFF":
            exif = im.getexif()  # the tags are read with the header
        elif im.info.get("exif"):  # (PNG's getexif() would decode the whole image)
            exif = Image.Exif()
            exif.load(im.info["exif"])
        else:
            return 1
        value = exif.get(0x0112, 1)
    except Exception:  # a damaged EXIF block: the pixels are still readable, nothing to apply
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def read_image_header(source: Path | bytes, name: str | os.PathLike | None = None) -> ImageHeader:
    """The header of an image file (a path, or its bytes with `name` for messages).

    Raises:
        DataError naming the file: missing, a folder, empty, not an image format, zero-sized, or
        over MAX_IMAGE_PIXELS.
    """
    from PIL import Image, UnidentifiedImageError

    where = name if name is not None else str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise DataError(f"{where}: empty file (0 bytes)")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
        p = Path(source)
        if p.is_dir():
            raise DataError(f"{p}: is a folder, not an image")
        if not p.is_file():
            raise DataError(f"{p}: image file is missing")
        if p.stat().st_size == 0:
            raise DataError(f"{p}: empty file (0 bytes)")
        fp = p
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                (w, h), fmt, mode = im.size, str(im.format), str(im.mode)
                orientation = _orientation(im)
    except Image.DecompressionBombError as e:
        raise DataError(f"{where}: refused, {e} (the limit is {MAX_IMAGE_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise DataError(
            f"{where}: not an image, or a format yolo4 does not read (JPEG, PNG, BMP, TIFF, WebP)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # PIL's plugins raise all of these on bad headers
        raise DataError(f"{where}: truncated or corrupt image header ({type(e).__name__}: {e})") from None
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: image has size {w}x{h}")
    if w * h > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where}: refused, {w}x{h} = {w * h:,} pixels is over the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb, or an image to tile or downscale first)"
        )
    return ImageHeader((h, w), fmt, mode, orientation)


def image_hw(path: Path) -> tuple[int, int] | str:
    """(height, width) of an image read from its header, or a problem string naming the file."""
    try:
        return read_image_header(path).hw
    except DataError as e:
        return str(e)


def inside(path: Path, root: Path) -> bool:
    """Whether `path` lies inside folder `root` once `..` are resolved (symbolic links are not
    followed: a link a user placed in their dataset is theirs to place)."""
    a = os.path.normpath(os.path.abspath(path))
    b = os.path.normpath(os.path.abspath(root))
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def join_inside(root: Path, relative: str) -> Path | None:
    """`root / relative` if that stays inside `root`, else None (an absolute `relative`, or one
    whose `..` climb out of it: `../../etc/passwd` in a label file)."""
    rel = Path(relative)
    if rel.is_absolute() or rel.drive:
        return None
    p = root / rel
    return p if inside(p, root) else None


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
