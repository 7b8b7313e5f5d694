"""Where images come from: image files, folders, globs, videos and webcams, read as RGB.

found, problems = resolve_sources(["photos/", "clip.mp4", "imgs/*.jpg", "0"])
image = load_image("dog.jpg")   # uint8 (H, W, 3) RGB
"""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import cv2
import numpy as np

from yolo4.data.formats.common import IMAGE_SUFFIXES, read_image_header
from yolo4.errors import DataError

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".ts"})

ImageLike = str | os.PathLike | np.ndarray | Any  # Any: a PIL.Image.Image


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3).

    The one judgement of "is this image usable" (training, `yolo4 dataset check`, detect and val
    all call it): the header is read first and an image over MAX_IMAGE_PIXELS is refused before
    any pixel is decoded; then OpenCV decodes it, and a truncated or corrupt file fails. Any
    format is judged by its content, not its extension (a PNG named .jpg reads). Grey, palette,
    CMYK and 16-bit images become 8-bit RGB (16-bit values keep their top 8 bits); an alpha
    channel is dropped, as darknet does. The EXIF orientation is ignored, as darknet does and
    as the pixel grid that labels refer to.
    Raises:
        DataError naming the file and the problem.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not an image")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
    header = read_image_header(raw, p)
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DataError(f"{p}: not a readable image: a truncated or corrupt {header.format} file")
    if tuple(img.shape[:2]) != header.hw:  # the decoder and the header disagree: a damaged file
        raise DataError(
            f"{p}: corrupt image: the header says {header.hw[1]}x{header.hw[0]}, the pixels are "
            f"{img.shape[1]}x{img.shape[0]}"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """A path, an RGB numpy array (H, W), (H, W, 3) or (H, W, 4), or a PIL image -> RGB uint8 (H, W, 3)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if not isinstance(image, np.ndarray):
        if hasattr(image, "convert"):  # PIL.Image.Image
            return np.asarray(image.convert("RGB"))
        raise DataError(f"cannot use an object of type {type(image).__name__} as an image")
    arr = image
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DataError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class ImageSource:
    """One image file."""

    path: Path


@dataclass(frozen=True)
class VideoSource:
    """A video file (path) or a webcam (index)."""

    path: Path | None = None
    camera: int | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"webcam {self.camera}"


Source = ImageSource | VideoSource
_GLOB_CHARS = set("*?[")


@overload
def _classify(path: Path, in_folder: Literal[False]) -> Source: ...
@overload
def _classify(path: Path, in_folder: bool) -> Source | str: ...
def _classify(path: Path, in_folder: bool) -> Source | str:
    """The source `path` is, or (only `in_folder`) why it is skipped."""
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return VideoSource(path=path)
    if ext in IMAGE_SUFFIXES or not in_folder:
        return ImageSource(path)  # a file named on its own is tried as an image
    return f"{path}: skipped, not an image or video file"


def resolve_sources(sources: Sequence[str | os.PathLike]) -> tuple[list[Source], list[str]]:
    """Expand the command line's sources into images and videos.

    Each source is a file, a folder (its images and videos, sorted, not recursive), a glob
    pattern (`imgs/*.jpg`, `**` allowed) or a webcam index (`0`).
    Returns:
        (sources in order, problems: one message per source that yields nothing, naming it).
    """
    found: list[Source] = []
    problems: list[str] = []

    def add_listed(files: list[Path]) -> None:  # files of a folder or a glob: non-media skipped
        for f in files:
            src = _classify(f, in_folder=True)
            if isinstance(src, str):
                problems.append(src)
            else:
                found.append(src)

    for raw in sources:
        s = str(raw)
        p = Path(s)
        if p.is_dir():
            before = len(found)
            add_listed(sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")))
            if len(found) == before:
                problems.append(f"{p}: folder has no images or videos")
        elif p.is_file():
            found.append(_classify(p, in_folder=False))
        elif s.isdigit():
            found.append(VideoSource(camera=int(s)))
        elif _GLOB_CHARS & set(s):
            matches = sorted(Path(m) for m in globlib.glob(s, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append(f"{s}: no files match this pattern")
            add_listed(matches)
        else:
            problems.append(f"{s}: no such file or folder")
    return found, problems


def open_video(source: VideoSource) -> tuple[cv2.VideoCapture, float, int]:
    """Open a video or webcam. Returns (capture, fps, frame_count or 0). Raises DataError."""
    if source.path is not None:
        cap = cv2.VideoCapture(str(source.path))
    elif source.camera is not None:
        cap = cv2.VideoCapture(source.camera)
    else:
        raise DataError("a VideoSource needs a path or a camera index")
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{source.name}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if source.path is not None else 0
    return cap, (fps if 0 < fps < 1000 else 30.0), max(count, 0)


def iter_frames(cap: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """RGB uint8 (H, W, 3) frames of an open capture until it ends."""
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
