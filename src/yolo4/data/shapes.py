"""`shapes`: the embedded, procedurally generated detection dataset.

Seven classes of filled shape (circle, square, triangle, star, cross, ring, heart) from
~10 px to half the image, 3-10 per image, in random colours that say nothing about the
class, on textured, noisy backgrounds (gradients, soft blobs, low-frequency texture, sharp
random lines), with partial occlusion (an object may lose up to 40 % of its pixels to
objects drawn over it). Every label is the tight box of the object's *visible* pixels,
computed from its rasterised mask, so labels are exact.

The dataset is written in YOLO txt layout::

    root/images/{train,val}/000000.jpg
    root/labels/{train,val}/000000.txt     # "class cx cy w h", normalised
    root/data.yaml                         # path (".": the folder of the YAML), train, val, names
    root/.shapes.json                      # the config that made it (completeness stamp)

It is deterministic (the same bytes for the same config, whatever the worker count: every
image has its own seed ``(seed, split, index)``) and idempotent (a complete dataset made
with the same config is reused at once; a half-written or different one is rebuilt).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from yolo4.errors import DataError

SHAPES_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "heart")

_STAMP = ".shapes.json"
_SPLITS = ("train", "val")
_FORMAT_VERSION = 2  # bump when the drawing changes, so old datasets are rebuilt
_NOISE_BANKS: dict[int, np.ndarray] = {}  # per process: fixed Gaussian noise to cut windows from


@dataclass(frozen=True)
class ShapesConfig:
    """Everything that decides the bytes of a `shapes` dataset.

    Sizes are the shape's nominal extent in pixels (its diameter before rotation),
    drawn log-uniformly from `size_range`; `num_objects` is an inclusive range.
    """

    seed: int = 0
    num_train: int = 3000
    num_val: int = 300
    img_size: int = 256  # square images, img_size x img_size
    classes: tuple[str, ...] = SHAPES_NAMES
    num_objects: tuple[int, int] = (3, 10)
    size_range: tuple[float, float] = (10.0, 128.0)
    max_occlusion: float = 0.4  # an object may lose at most this fraction of its pixels
    rotation_deg: float = 30.0  # shapes are rotated uniformly in [-rotation_deg, rotation_deg]
    noise_range: tuple[float, float] = (3.0, 12.0)  # std of the final Gaussian pixel noise
    num_lines: tuple[int, int] = (2, 12)  # sharp random distractor lines on the background
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        unknown = set(self.classes) - set(SHAPES_NAMES)
        if unknown:
            raise DataError(f"shapes: unknown classes {sorted(unknown)}; choose from {SHAPES_NAMES}")
        if not (0 < self.size_range[0] <= self.size_range[1]):
            raise DataError(f"shapes: bad size_range {self.size_range}")
        if self.size_range[1] > self.img_size:
            raise DataError(f"shapes: size_range {self.size_range} exceeds img_size {self.img_size}")
        if not (1 <= self.num_objects[0] <= self.num_objects[1]):
            raise DataError(f"shapes: bad num_objects {self.num_objects}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["format_version"] = _FORMAT_VERSION
        return json.loads(json.dumps(d))  # tuples -> lists, so a reread compares equal


# ---------------------------------------------------------------- shape geometry
def _unit_polygons(name: str) -> list[np.ndarray]:
    """Polygons (float (K, 2), xy) of a shape of nominal diameter 2 centred at 0.

    The first polygon is filled; later ones are holes (the ring)."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    if name == "circle":
        return [circle]
    if name == "ring":
        return [circle, 0.55 * circle]
    if name == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.85]
    if name == "triangle":
        a = np.deg2rad([-90, 30, 150])
        return [np.stack([np.cos(a), np.sin(a) + 0.25], 1) * 1.1]
    if name == "star":
        a = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [np.stack([r * np.cos(a), r * np.sin(a) + 0.1], 1)]
    if name == "cross":
        w = 0.34
        p = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
        return [np.array(p, np.float64)]
    if name == "heart":
        s = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(s) ** 3
        y = -(13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s))
        return [np.stack([x / 16.5, (y + 2.5) / 15.5], 1)]
    raise DataError(f"shapes: unknown shape {name!r}")


_POLYS = {n: _unit_polygons(n) for n in SHAPES_NAMES}


def _shape_mask(name: str, size: float, aspect: float, angle: float, patch: int, sub: int = 4) -> np.ndarray:
    """Boolean mask (patch, patch) of one shape centred in a square patch (no anti-aliasing)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    scale = np.array([aspect**0.5, aspect**-0.5]) * size / 2
    m = np.zeros((patch, patch), np.uint8)
    for k, poly in enumerate(_POLYS[name]):
        pts = (poly * scale) @ rot.T + patch / 2  # (K, 2) in patch pixels
        pts = np.round(pts * (1 << sub)).astype(np.int32)
        cv2.fillPoly(m, [pts], 0 if k else 1, lineType=cv2.LINE_8, shift=sub)
    return m.astype(bool)


# ---------------------------------------------------------------- one image
def _pixel_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Standard Gaussian noise float32 (n, n, 3): a random window (with random flips and
    channel order) of a fixed bank, 15x cheaper than drawing fresh noise per image."""
    side = max(1024, 2 * n)
    bank = _NOISE_BANKS.get(side)
    if bank is None:
        bank = _NOISE_BANKS[side] = np.random.default_rng(20201123).standard_normal((side, side, 3), np.float32)
    y, x = (int(v) for v in rng.integers(0, side - n + 1, 2))
    win = bank[y : y + n, x : x + n]
    if rng.random() < 0.5:
        win = win[::-1]
    if rng.random() < 0.5:
        win = win[:, ::-1]
    return win[:, :, rng.permutation(3)]


def _background(rng: np.random.Generator, cfg: ShapesConfig) -> np.ndarray:
    """A smooth random background (gradient, soft blobs, texture) plus sharp lines, float32 (S, S, 3)."""
    n = cfg.img_size
    q = max(n // 4, 8)  # the smooth part is drawn at quarter resolution, then upsampled
    yy, xx = np.mgrid[0:q, 0:q].astype(np.float32) / q
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * xx + np.sin(a) * yy
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    low = c0 + (c1 - c0) * t[..., None]  # (q, q, 3)
    for _ in range(int(rng.integers(2, 7))):  # soft blobs
        centre = (int(rng.integers(0, q)), int(rng.integers(0, q)))
        axes = (int(rng.integers(q // 16 + 1, q // 3)), int(rng.integers(q // 16 + 1, q // 3)))
        cv2.ellipse(low, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(0, 255, 3).tolist(), -1)
    low = cv2.GaussianBlur(low, (0, 0), float(rng.uniform(0.75, 2.5)))
    tex = rng.normal(0, rng.uniform(5, 25), (8, 8, 3)).astype(np.float32)  # low-frequency texture
    low += cv2.resize(tex, (q, q), interpolation=cv2.INTER_CUBIC)
    img = cv2.resize(low, (n, n), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(cfg.num_lines[0], cfg.num_lines[1] + 1))):  # sharp distractor lines
        p1 = (int(rng.integers(-n // 4, n + n // 4)), int(rng.integers(-n // 4, n + n // 4)))
        p2 = (int(rng.integers(-n // 4, n + n // 4)), int(rng.integers(-n // 4, n + n // 4)))
        cv2.line(img, p1, p2, rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def render_shapes_image(cfg: ShapesConfig, split: str, index: int, return_masks: bool = False):
    """Draw image `index` of `split` (pure function of the config, split and index).

    Returns:
        image uint8 (S, S, 3) RGB, boxes float32 (N, 4) xyxy pixels (tight boxes of the
        visible pixels), class_ids int64 (N,) indexing `cfg.classes`; with return_masks, also
        the visible-pixel masks bool (N, S, S).
    """
    rng = np.random.default_rng([cfg.seed, _SPLITS.index(split), index])
    n = cfg.img_size
    img = _background(rng, cfg)
    lo, hi = math.log(cfg.size_range[0]), math.log(cfg.size_range[1])
    masks: list[np.ndarray] = []  # full-image visible masks, one per object
    areas: list[int] = []  # pixels each object had when drawn
    classes: list[int] = []
    want = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    tries = 0
    while len(masks) < want and tries < want * 8:
        tries += 1
        cls = int(rng.integers(len(cfg.classes)))
        size = math.exp(rng.uniform(lo, hi))
        aspect = math.exp(rng.uniform(-0.22, 0.22))
        angle = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
        patch = int(math.ceil(size * 1.5)) + 4
        local = _shape_mask(cfg.classes[cls], size, aspect, angle, patch)
        ys, xs = np.nonzero(local)
        if len(ys) < 16:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        local = local[y0:y1, x0:x1]
        h, w = local.shape
        if h > n or w > n:
            continue
        top, left = int(rng.integers(0, n - h + 1)), int(rng.integers(0, n - w + 1))
        win = np.s_[top : top + h, left : left + w]
        # reject a placement that would hide too much of an object already drawn
        if any(
            np.count_nonzero(m[win] & local) > 0
            and np.count_nonzero(m) - np.count_nonzero(m[win] & local) < (1 - cfg.max_occlusion) * a
            for m, a in zip(masks, areas)
        ):
            continue
        under = img[win][local].mean(0)  # mean colour under the new object
        for _ in range(12):
            color = rng.uniform(0, 255, 3)
            if np.abs(color - under).sum() > 120:
                break
        for m in masks:
            m[win] &= ~local
        full = np.zeros((n, n), bool)
        full[win] = local
        img[win] = np.where(local[..., None], color.astype(np.float32), img[win])
        masks.append(full)
        areas.append(int(local.sum()))
        classes.append(cls)
    img = cv2.GaussianBlur(img, (5, 5), float(rng.uniform(0.3, 0.9)))
    img = img + _pixel_noise(rng, n) * np.float32(rng.uniform(*cfg.noise_range))
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)  # rounds: values are >= 0 after the clip
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.any(m, 1), np.any(m, 0)
        yi, xi = np.nonzero(rows)[0], np.nonzero(cols)[0]
        boxes[k] = (xi[0], yi[0], xi[-1] + 1, yi[-1] + 1)  # pixel edges: a pixel x spans [x, x+1)
    if return_masks:
        return image, boxes, np.asarray(classes, np.int64), np.asarray(masks, bool).reshape(-1, n, n)
    return image, boxes, np.asarray(classes, np.int64)


def _yolo_lines(boxes: np.ndarray, class_ids: np.ndarray, n: int) -> str:
    lines = []
    for (x1, y1, x2, y2), c in zip(boxes.tolist(), class_ids.tolist()):
        lines.append(f"{c} {(x1 + x2) / 2 / n:.6f} {(y1 + y2) / 2 / n:.6f} {(x2 - x1) / n:.6f} {(y2 - y1) / n:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def _write_one(args: tuple[ShapesConfig, str, int, str]) -> None:
    cfg, split, i, root = args
    image, boxes, cls = render_shapes_image(cfg, split, i)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if not ok:
        raise DataError(f"shapes: could not encode image {split}/{i}")
    Path(root, "images", split, f"{i:06d}.jpg").write_bytes(buf.tobytes())
    Path(root, "labels", split, f"{i:06d}.txt").write_text(_yolo_lines(boxes, cls, cfg.img_size))


# ---------------------------------------------------------------- the dataset on disk
def _is_complete(root: Path, cfg: ShapesConfig) -> bool:
    try:
        stamp = json.loads((root / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp != cfg.to_json() or not (root / "data.yaml").is_file():
        return False
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        for kind, ext in (("images", ".jpg"), ("labels", ".txt")):
            d = root / kind / split
            if not d.is_dir() or sum(1 for p in d.iterdir() if p.suffix == ext) != count:
                return False
    return True


def _looks_like_shapes(root: Path) -> bool:
    """True if `root` holds nothing but what make_shapes writes (so it may be replaced)."""
    allowed = {"images", "labels", "data.yaml", _STAMP, ".yolo4-cache"}
    return all(p.name in allowed for p in root.iterdir())


def make_shapes(
    root: str | Path, cfg: ShapesConfig = ShapesConfig(), workers: int | None = None, progress: bool = True
) -> Path:
    """Write the `shapes` dataset under `root` (see the module docstring) and return its
    `data.yaml`. Returns at once if `root` already holds the same complete dataset.

    The data are written to a temporary folder beside `root` and renamed into place, so
    an interrupted run never leaves a dataset that looks complete. An existing `root` that
    is not a shapes dataset is never deleted: that raises DataError.
    """
    root = Path(root).expanduser().resolve()
    if _is_complete(root, cfg):
        return root / "data.yaml"
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not _looks_like_shapes(root))):
        raise DataError(f"{root}: exists and is not a shapes dataset; choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split in _SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
        jobs = [(cfg, s, i, str(tmp)) for s, k in (("train", cfg.num_train), ("val", cfg.num_val)) for i in range(k)]
        workers = min(os.cpu_count() or 1, 4) if workers is None else workers
        bar = tqdm(total=len(jobs), desc=f"shapes -> {root}", unit="img", disable=not progress, leave=False)
        if workers <= 1 or len(jobs) < 200:
            for j in jobs:
                _write_one(j)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_write_one, jobs, chunksize=32):
                    bar.update()
        bar.close()
        meta = {"path": ".", "train": "images/train", "val": "images/val", "names": list(cfg.classes)}
        (tmp / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        (tmp / _STAMP).write_text(json.dumps(cfg.to_json(), indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "data.yaml"


def make_shapes_from_args(root: str | Path, **overrides) -> Path:
    """make_shapes with the ShapesConfig fields given in `overrides` (None = default);
    `img_size` alone also scales the default size range (max: half the image)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "img_size" in given and "size_range" not in given:
        s = given["img_size"]
        given["size_range"] = (min(10.0, s / 8), s / 2)
    return make_shapes(root, ShapesConfig(**given))


# ---------------------------------------------------------------- a video of moving shapes
@dataclass(frozen=True)
class ShapesVideoConfig:
    """A synthetic video for tracking: `num_objects` shapes of fixed class, size, rotation and
    colour move at constant velocity over one static textured background, bouncing off the
    borders and passing over each other (later objects in front), with fresh pixel noise in
    every frame. Sizes in pixels, speeds in pixels per frame."""

    seed: int = 0
    num_frames: int = 90
    img_size: int = 320
    num_objects: int = 6
    size_range: tuple[float, float] = (28.0, 56.0)
    speed_range: tuple[float, float] = (1.0, 4.0)
    classes: tuple[str, ...] = SHAPES_NAMES
    noise: float = 6.0
    min_visible: float = 0.3  # an object shows in the ground truth while this much of it is visible


def render_shapes_video(cfg: ShapesVideoConfig = ShapesVideoConfig()):
    """The frames of a moving-shapes video with their ground truth (a pure function of cfg).

    Yields, per frame:
        image uint8 (S, S, 3) RGB, boxes float32 (N, 4) xyxy (tight boxes of the visible pixels),
        class_ids int64 (N,), object ids int64 (N,) (0-based, stable for the whole video); an
        object hidden below `min_visible` of its pixels is left out of that frame.
    """
    rng = np.random.default_rng([cfg.seed, 7])
    n = cfg.img_size
    background = _background(rng, ShapesConfig(img_size=n, size_range=(1.0, float(n))))
    objects: list[dict[str, Any]] = []
    for _ in range(cfg.num_objects):
        cls = int(rng.integers(len(cfg.classes)))
        size = float(np.exp(rng.uniform(*np.log(cfg.size_range))))
        mask = _shape_mask(
            cfg.classes[cls], size, 1.0, math.radians(rng.uniform(-30, 30)), int(math.ceil(size * 1.5)) + 4
        )
        ys, xs = np.nonzero(mask)
        mask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        h, w = mask.shape
        pos = rng.uniform([0, 0], [n - w, n - h])  # top-left x, y
        angle = rng.uniform(0, 2 * np.pi)
        vel = rng.uniform(*cfg.speed_range) * np.array([np.cos(angle), np.sin(angle)])
        objects.append({"cls": cls, "mask": mask, "pos": pos, "vel": vel, "color": rng.uniform(0, 255, 3)})
    for _ in range(cfg.num_frames):
        img = background.copy()
        owner = np.full((n, n), -1, np.int64)  # which object each pixel shows
        for k, ob in enumerate(objects):
            h, w = ob["mask"].shape
            x, y = (int(round(v)) for v in ob["pos"])
            win = np.s_[y : y + h, x : x + w]
            img[win] = np.where(ob["mask"][..., None], ob["color"].astype(np.float32), img[win])
            owner[win] = np.where(ob["mask"], k, owner[win])
        img = cv2.GaussianBlur(img, (3, 3), 0.6) + _pixel_noise(rng, n) * np.float32(cfg.noise)
        boxes, classes, ids = [], [], []
        for k, ob in enumerate(objects):
            ys, xs = np.nonzero(owner == k)
            if len(ys) < cfg.min_visible * ob["mask"].sum():
                continue
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            classes.append(ob["cls"])
            ids.append(k)
        yield (
            np.clip(img + 0.5, 0, 255).astype(np.uint8),
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(classes, np.int64),
            np.asarray(ids, np.int64),
        )
        for ob in objects:  # move, bouncing off the borders
            h, w = ob["mask"].shape
            ob["pos"] += ob["vel"]
            for axis, limit in ((0, n - w), (1, n - h)):
                if not 0 <= ob["pos"][axis] <= limit:
                    ob["vel"][axis] = -ob["vel"][axis]
                    ob["pos"][axis] = float(np.clip(ob["pos"][axis], 0, limit))
