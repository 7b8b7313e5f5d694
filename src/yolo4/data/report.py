"""`yolo4 dataset check` and `yolo4 dataset show`: what is in a dataset, what is wrong
with it, and what the network is fed."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from yolo4.data.augment import AugmentConfig, eval_sample, train_sample
from yolo4.data.dataset import DetectionDataset, load_dataset
from yolo4.data.formats.common import read_image_header
from yolo4.errors import DataError

# box size = sqrt(w * h) in pixels; COCO's small/medium/large split at 32 and 96
SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, float("inf"))


@dataclass
class DatasetReport:
    """Counts of a dataset split. class_counts: int64 (K,) boxes per class;
    size_counts: int64 (len(SIZE_EDGES) - 1,) boxes per sqrt(area) bucket."""

    source: str
    split: str
    names: list[str]
    num_images: int
    num_boxes: int
    num_background: int  # images without boxes
    class_counts: np.ndarray
    size_counts: np.ndarray
    num_skipped: int
    problems: list[str] = field(default_factory=list)
    decoded: bool = False  # every image was decoded (not only its header read)
    num_undecodable: int = 0  # images that fail to decode: training skips them
    num_rotated: int = 0  # images with an EXIF orientation other than 1 (ignored, as darknet does)


def decode_images(ds: DetectionDataset, workers: int | None = None, progress: bool = True) -> tuple[list[str], int]:
    """Decode every image of `ds` exactly as training loads it (`ds.load`), in parallel threads.

    Returns:
        (one problem per image that fails, naming it; how many images carry an EXIF rotation).
    """
    from tqdm import tqdm

    def one(i: int) -> tuple[str | None, bool]:
        try:
            ds.load(i)
            return None, read_image_header(ds.image_paths[i]).orientation != 1
        except DataError as e:
            return f"{e} -> training skips it", False

    workers = workers or min(8, os.cpu_count() or 1)
    problems, rotated = [], 0
    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decodes without the GIL
        results = pool.map(one, range(len(ds)), chunksize=16)
        for problem, turned in tqdm(
            results, total=len(ds), desc="decoding images", unit="img", disable=not progress, file=sys.stderr
        ):
            if problem is not None:
                problems.append(problem)
            rotated += turned
    return problems, rotated


def dataset_report(ds: DetectionDataset) -> DatasetReport:
    """Count a loaded dataset's boxes per class and per size bucket (no image is read)."""
    labels = [ds.labels(i) for i in range(len(ds))]
    boxes = np.concatenate([b for b, _ in labels]) if labels else np.zeros((0, 4), np.float32)
    cls = np.concatenate([c for _, c in labels]) if labels else np.zeros(0, np.int64)
    sizes = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))
    return DatasetReport(
        source=str(ds.source),
        split=ds.split,
        names=list(ds.names),
        num_images=len(ds),
        num_boxes=len(cls),
        num_background=sum(1 for _, c in labels if len(c) == 0),
        class_counts=np.bincount(cls, minlength=len(ds.names)).astype(np.int64),
        size_counts=np.histogram(sizes, bins=np.array(SIZE_EDGES))[0].astype(np.int64),
        num_skipped=ds.num_skipped,
        problems=list(ds.problems),
    )


def format_report(r: DatasetReport, max_problems: int = 50) -> str:
    """The report as text: counts per class, a box-size histogram, problems by file."""
    lines = [
        f"dataset {r.source} [{r.split}]: {r.num_images} images ({r.num_background} without boxes), "
        f"{r.num_boxes} boxes, {len(r.names)} classes, {r.num_skipped} images skipped"
    ]
    if r.decoded:
        lines.append(
            f"every image decoded: {r.num_undecodable} cannot be (training skips them)"
            if r.num_undecodable
            else "every image decoded: all readable"
        )
    else:
        lines.append("image headers read only (--fast): truncated or corrupt pixels are not found")
    if r.num_rotated:
        lines.append(
            f"{r.num_rotated} images carry an EXIF rotation, which yolo4 ignores as darknet does: their boxes "
            "must refer to the stored pixels (check with `yolo4 dataset show`)"
        )
    lines.append("")
    lines.append("boxes per class:")
    top = max(int(r.class_counts.max()) if len(r.class_counts) else 0, 1)
    width = max((len(n) for n in r.names), default=4)
    for k, n in enumerate(r.names):
        c = int(r.class_counts[k])
        lines.append(f"  {k:>3} {n:<{width}} {c:>8}  {'#' * round(40 * c / top)}")
    lines.append("")
    lines.append("box size sqrt(w*h), pixels:")
    top = max(int(r.size_counts.max()), 1)
    for lo, hi, c in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:], r.size_counts.tolist()):
        label = f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}"
        lines.append(f"  {label:>9} {c:>8}  {'#' * round(40 * c / top)}")
    lines.append("")
    if r.problems:
        lines.append(f"{len(r.problems)} problem(s):")
        lines += [f"  {p}" for p in r.problems[:max_problems]]
        if len(r.problems) > max_problems:
            lines.append(f"  ... and {len(r.problems) - max_problems} more")
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def plot_report(r: DatasetReport, out: str | Path) -> Path:
    """Bar charts of boxes per class and per size bucket, written to `out` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(range(len(r.names)), r.class_counts)
    a.set_xticks(range(len(r.names)), r.names, rotation=60 if len(r.names) > 8 else 0, fontsize=8)
    a.set_title("boxes per class")
    labels = [
        f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}" for lo, hi in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:])
    ]
    b.bar(range(len(labels)), r.size_counts)
    b.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
    b.set_title("box size sqrt(w*h), pixels")
    fig.suptitle(f"{r.source} [{r.split}]: {r.num_images} images, {r.num_boxes} boxes")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def check_dataset(
    data: str | Path,
    split: str = "all",
    plot: str | Path | None = None,
    stream: TextIO | None = None,
    fast: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> int:
    """Print the report of `data` (and draw it to `plot` if given). Every image is decoded as
    training would decode it (in `workers` threads), unless `fast`: then only headers are read.
    Returns 1 if problems were found, else 0 (an exit code)."""
    ds = load_dataset(data, split, progress=progress)
    r = dataset_report(ds)
    if not fast:
        bad, r.num_rotated = decode_images(ds, workers, progress)
        r.decoded, r.num_undecodable = True, len(bad)
        r.problems += bad
    print(format_report(r), file=stream or sys.stdout)
    if plot is not None:
        print(f"plot written to {plot_report(r, plot)}", file=stream or sys.stdout)
    return 1 if r.problems else 0


def show_dataset(
    data: str | Path,
    out: str | Path,
    split: str = "train",
    count: int = 16,
    augment: bool = False,
    img_size: int = 416,
    seed: int = 0,
    augment_config: AugmentConfig | None = None,
) -> Path:
    """Draw `count` samples of `data` with their boxes into the image `out`: as stored
    (letterboxed to img_size) or, with `augment`, as the training pipeline makes them.

    An image `load_image` refuses (undecodable, truncated, too large) is skipped with a warning
    naming it on stderr, and the next random image takes its place.
    Raises:
        DataError when no image of the split can be read, or `out` cannot be written."""
    from yolo4.viz.grid import draw_grid

    ds = load_dataset(data, split)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds)).tolist()  # the first `count` are the picks, the rest stand in for bad ones
    cfg = augment_config or AugmentConfig()
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    titles: list[str] = []
    skipped = 0
    for i in order:
        if len(samples) == count:
            break
        k = len(samples) + skipped
        try:
            if augment:
                img, b, c, _ = train_sample(ds, i, img_size, cfg, np.random.default_rng([seed, k]))
            else:
                img, b, c, _ = eval_sample(ds, i, img_size)
        except DataError as e:  # the message names the file (a mosaic partner may be the bad one)
            print(f"warning: {e}; skipped", file=sys.stderr)
            skipped += 1
            continue
        samples.append((img, b, c))
        titles.append(Path(ds.image_paths[i]).name)
    if not samples:
        raise DataError(f"{data}: none of the {len(ds)} images of split {split} could be read")
    grid = draw_grid(samples, ds.names, titles=titles)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise DataError(f"{out}: cannot write the image (unknown extension or folder not writable)")
    return out
