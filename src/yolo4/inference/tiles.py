"""Tiled (sliced) inference for large images with small objects.

A 4000x3000 photo resized to a 416 network input shrinks a 20-pixel object to 2 pixels,
below what any YOLO head resolves. Cutting the image into overlapping tiles of about the
network's size keeps objects at their own scale; each tile goes through the ordinary
`Detector`, its boxes are shifted back into the image, and the boxes of all tiles (plus,
optionally, one pass over the whole image for the large objects that no tile holds) are
merged where tiles overlap:

    tiled = TiledDetector(detector, TileConfig(size=416, overlap=0.2))
    [det] = tiled.predict_batch([image])      # Detections in the image's pixels

Merging: an object inside the overlap of two tiles is found twice, with nearly the same box;
an object cut by a tile's side is found whole in the neighbouring tile (when the overlap is
wider than the object) or in the whole-image pass, and as a part in the cut tile. First, a
box that touches a side of its tile lying inside the image is a cut view (`cut_by_tile`),
and it is dropped when a box of its class that no tile cut covers most of it
(`drop_cut_parts`: intersection over the smaller box, IoS > `merge_threshold`). Then the
boxes of all tiles are merged class by class: IoU-NMS ("nms", the default) removes the
repeated views; greedy non-maximum merging ("nmm", SAHI's default) instead groups boxes by
IoS and keeps their union. On the benchmark (`benchmarks/bench_tiles.py`) NMS scored higher:
at the low thresholds of mAP, IoS also swallows small true boxes lying inside a large
confident one.

Why not SAHI itself: it runs models through its own `DetectionModel` adapters (one more to write
and keep for `Detector`, exported files included), its package requires `opencv-python` (which
clashes with the headless OpenCV this project uses) and shapely, and it has no rule for cut
views; the part needed here, tile windows and a merge, is a few pure functions, and the tiles
go through `Detector` in batches like any other images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision
from torch import Tensor

from yolo4.errors import Yolo4Error
from yolo4.inference.detector import STAGES, Batch, Detections, Detector

MERGE_NAMES = ("nmm", "nms")


@dataclass(frozen=True)
class TileConfig:
    """How `TiledDetector` slices and merges.

    size: tile side in image pixels (an int: square, or (height, width)); usually the network
        input size, so that tiles are fed at their own scale.
    overlap: fraction of a tile shared with its neighbour, in [0, 1); it should be wider than
        the largest object that tiles are meant to catch whole.
    full_image: also run the whole image through the detector (for objects larger than a tile).
    merge: "nms" (IoU-NMS, default) or "nmm" (greedy merging by intersection over smaller),
        class by class; see the module docstring.
    merge_threshold: IoU for "nms", IoS for "nmm" and for dropping cut views.
    batch: tiles per forward pass.
    """

    size: int | tuple[int, int] = 416
    overlap: float = 0.2
    full_image: bool = True
    merge: str = "nms"
    merge_threshold: float = 0.5
    batch: int = 16

    def __post_init__(self) -> None:
        problems = []
        if min(self.tile_hw) < 32:
            problems.append(f"tile size {self.size} must be at least 32 pixels")
        if not 0.0 <= self.overlap < 1.0:
            problems.append(f"tile overlap {self.overlap} must be in [0, 1)")
        if self.merge not in MERGE_NAMES:
            problems.append(f"unknown tile merge '{self.merge}' (choose from {', '.join(MERGE_NAMES)})")
        if not 0.0 < self.merge_threshold <= 1.0:
            problems.append(f"merge threshold {self.merge_threshold} must be in (0, 1]")
        if self.batch < 1:
            problems.append(f"tile batch {self.batch} must be >= 1")
        if problems:
            raise Yolo4Error("tiling: " + "; ".join(problems))

    @property
    def tile_hw(self) -> tuple[int, int]:
        if isinstance(self.size, int):
            return self.size, self.size
        h, w = self.size
        return int(h), int(w)

    def describe(self) -> str:
        h, w = self.tile_hw
        full = " + full image" if self.full_image else ""
        return f"tiles {w}x{h}, overlap {self.overlap:g}{full}, merge {self.merge} {self.merge_threshold:g}"


# ================================================================== tile windows
def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of windows of `tile` along an axis of `length`: a step of
    tile * (1 - overlap), the last window flush with the end."""
    if length <= tile:
        return [0]
    step = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, length - tile, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_windows(image_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float) -> np.ndarray:
    """Windows that cover an image with tiles of `tile_hw` overlapping by at least `overlap`.

    Args:
        image_hw: (height, width). tile_hw: (height, width); an image side smaller than the
            tile gives windows of the image's side.
    Returns:
        int64 (T, 4) xyxy windows in image pixels, row by row.
    """
    (h, w), (th, tw) = image_hw, tile_hw
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    out = [(x, y, min(x + tw, w), min(y + th, h)) for y in ys for x in xs]
    return np.asarray(out, np.int64).reshape(-1, 4)


# ================================================================== merging
def box_ios(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over the smaller box's area.

    Args:
        boxes1: Tensor[N, 4] xyxy. boxes2: Tensor[M, 4] xyxy.
    Returns:
        Tensor[N, M] in [0, 1] (0 where a box has no area).
    """
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, M)
    area1 = torchvision.ops.box_area(boxes1)
    area2 = torchvision.ops.box_area(boxes2)
    smaller = torch.minimum(area1[:, None], area2[None, :])
    return torch.where(smaller > 0, inter / smaller.clamp(min=1e-12), torch.zeros_like(inter))


WIDEN_RATIO = 0.5  # merge_nmm: members scoring at least this fraction of the leader's widen the merged box
MergeFn = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor, Tensor]]


def merge_nms(boxes: Tensor, scores: Tensor, class_ids: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Class-aware IoU-NMS (torchvision's `batched_nms`) of the boxes of all tiles.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. class_ids: Tensor[K] int. threshold: IoU.
    Returns:
        (boxes Tensor[M, 4], scores Tensor[M], class_ids Tensor[M]) by decreasing score.
    """
    keep = torchvision.ops.batched_nms(boxes, scores, class_ids, threshold)
    return boxes[keep], scores[keep], class_ids[keep]


def merge_nmm(boxes: Tensor, scores: Tensor, class_ids: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy non-maximum merging, class by class: in order of decreasing score, each box not
    yet taken leads a group of every untaken box of its class whose intersection with the
    leader covers more than `threshold` of the smaller of the two (IoS); the group becomes the
    union of the boxes that score at least `WIDEN_RATIO` of the leader's, at the leader's (the
    group's best) score. Weaker members are suppressed without widening the box: at the low
    thresholds of mAP evaluation (conf 0.001) a large, barely confident box around a small
    object would otherwise swallow it.

    A whole object's box (from the tile that holds it, or the whole-image pass) takes the
    parts that other tiles see of it when it scores highest, as whole views usually do.

    Args:
        boxes: Tensor[K, 4] xyxy. scores: Tensor[K]. class_ids: Tensor[K] int. threshold: IoS.
    Returns:
        (boxes Tensor[M, 4], scores Tensor[M], class_ids Tensor[M]) by decreasing score.
    """
    device = boxes.device
    order = scores.argsort(descending=True, stable=True)
    boxes, scores, class_ids = boxes[order].float().cpu(), scores[order].cpu(), class_ids[order].cpu()
    out_boxes, keep = [], []
    for c in torch.unique(class_ids).tolist():
        members = torch.nonzero(class_ids == c).squeeze(1)  # ranks of class c, best first
        cls_boxes, cls_scores = boxes[members], scores[members]  # (Kc, 4), (Kc,)
        taken = torch.zeros(len(members), dtype=torch.bool)
        for i in range(len(members)):
            if taken[i]:
                continue
            group = (box_ios(cls_boxes[i : i + 1], cls_boxes)[0] > threshold) & ~taken  # (Kc,)
            group[i] = True
            taken |= group
            g = cls_boxes[group & (cls_scores >= WIDEN_RATIO * cls_scores[i])]  # (G', 4), the leader included
            out_boxes.append(torch.cat([g[:, :2].min(0).values, g[:, 2:].max(0).values]))
            keep.append(int(members[i]))
    if not keep:
        return boxes[:0].to(device), scores[:0].to(device), class_ids[:0].to(device)
    rank = torch.as_tensor(keep).argsort()  # back to decreasing score over all classes
    idx = torch.as_tensor(keep)[rank]
    return torch.stack(out_boxes)[rank].to(device), scores[idx].to(device), class_ids[idx].to(device)


MERGERS: dict[str, MergeFn] = {"nmm": merge_nmm, "nms": merge_nms}
EDGE_MARGIN = 2.0  # pixels: a box this close to a tile side inside the image is a cut view


def cut_by_tile(boxes: Tensor, window: tuple[int, int, int, int], image_hw: tuple[int, int]) -> Tensor:
    """Which boxes touch a side of their tile that lies inside the image (the object may go on
    beyond it), within EDGE_MARGIN pixels.

    Args:
        boxes: Tensor[N, 4] xyxy in image pixels. window: the tile's (x1, y1, x2, y2).
        image_hw: (height, width) of the image.
    Returns:
        bool Tensor[N].
    """
    x1, y1, x2, y2 = window
    h, w = image_hw
    m = EDGE_MARGIN
    cut = torch.zeros(boxes.shape[0], dtype=torch.bool)
    if x1 > 0:
        cut |= boxes[:, 0] <= x1 + m
    if y1 > 0:
        cut |= boxes[:, 1] <= y1 + m
    if x2 < w:
        cut |= boxes[:, 2] >= x2 - m
    if y2 < h:
        cut |= boxes[:, 3] >= y2 - m
    return cut


def drop_cut_parts(boxes: Tensor, class_ids: Tensor, cut: Tensor, threshold: float) -> Tensor:
    """Keep-mask without the cut views (`cut_by_tile`) that lie mostly (IoS > threshold) inside a
    box of the same class that no tile cut: the part of an object that one tile sees when a
    neighbouring tile, or the whole-image pass, sees all of it.

    Args:
        boxes: Tensor[N, 4] xyxy. class_ids: Tensor[N] int. cut: bool Tensor[N].
    Returns:
        bool Tensor[N], True for the boxes to keep.
    """
    keep = torch.ones(boxes.shape[0], dtype=torch.bool)
    whole = ~cut
    if not cut.any() or not whole.any():
        return keep
    inside = box_ios(boxes[cut], boxes[whole]) > threshold  # (Nc, Nw)
    same = class_ids[cut][:, None] == class_ids[whole][None, :]
    keep[torch.nonzero(cut).squeeze(1)] = ~(inside & same).any(dim=1)
    return keep


# ================================================================== the tiled detector
@dataclass
class TiledBatch:
    """Images on their way through `TiledDetector` (prepare -> forward -> finish): `parts` are
    the inner detector's batches of tiles; tile k belongs to image `owners[k]` and covers its
    pixels `windows[k]` = (x1, y1, x2, y2)."""

    images: list[np.ndarray]
    paths: list[str | None]
    parts: list[Batch]
    owners: list[int]
    windows: list[tuple[int, int, int, int]]
    ms: dict[str, float] = field(default_factory=dict)


class TiledDetector:
    """A `Detector` run over tiles of each image (see the module docstring), with the same
    interface: `prepare` / `forward` / `finish`, `predict_batch`, `warmup`, and the attributes
    that `evaluate` and `run_detect` read (names, num_classes, input_hw, resize, device)."""

    def __init__(self, detector: Detector, config: TileConfig):
        self.detector, self.config = detector, config
        self.names, self.num_classes = detector.names, detector.num_classes
        self.input_hw, self.resize, self.device = detector.input_hw, detector.resize, detector.device
        self.postprocess = detector.postprocess
        self.max_det = detector.postprocess.max_det
        self._merge = MERGERS[config.merge]

    def windows(self, image_hw: tuple[int, int]) -> np.ndarray:
        """int64 (T, 4) xyxy windows for an image of `image_hw` (the whole image last when
        `full_image` is set and there is more than one tile)."""
        wins = tile_windows(image_hw, self.config.tile_hw, self.config.overlap)
        if self.config.full_image and len(wins) > 1:
            wins = np.concatenate([wins, np.asarray([[0, 0, image_hw[1], image_hw[0]]], np.int64)])
        return wins

    def prepare(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> TiledBatch:
        """Cut every image into its windows and pre-process the tiles in batches of `config.batch`."""
        paths = list(paths) if paths is not None else [None] * len(images)
        t0 = time.perf_counter()
        tiles, owners, windows = [], [], []
        for i, img in enumerate(images):
            for x1, y1, x2, y2 in self.windows(img.shape[:2]).tolist():
                tiles.append(img[y1:y2, x1:x2])
                owners.append(i)
                windows.append((x1, y1, x2, y2))
        n = self.config.batch
        parts = [self.detector.prepare(tiles[j : j + n]) for j in range(0, len(tiles), n)]
        tb = TiledBatch(list(images), paths, parts, owners, windows)
        tb.ms["preprocess"] = (time.perf_counter() - t0) * 1e3
        return tb

    def forward(self, tb: TiledBatch) -> TiledBatch:
        t0 = time.perf_counter()
        for part in tb.parts:
            self.detector.forward(part)
        tb.ms["network"] = (time.perf_counter() - t0) * 1e3
        return tb

    def finish(self, tb: TiledBatch) -> list[Detections]:
        """Tile detections shifted into their images and merged; one Detections per image."""
        t0 = time.perf_counter()
        per_tile = [d for part in tb.parts for d in self.detector.finish(part)]
        results = []
        for i, (img, path) in enumerate(zip(tb.images, tb.paths)):
            hw = (int(img.shape[0]), int(img.shape[1]))
            boxes, scores, class_ids, cut = [], [], [], []
            for d, owner, win in zip(per_tile, tb.owners, tb.windows):
                if owner != i or not len(d):
                    continue
                shifted = torch.from_numpy(d.boxes) + torch.tensor(
                    [win[0], win[1], win[0], win[1]], dtype=torch.float32
                )
                boxes.append(shifted)
                scores.append(torch.from_numpy(d.scores))
                class_ids.append(torch.from_numpy(d.class_ids))
                cut.append(cut_by_tile(shifted, win, hw))
            if boxes:
                b, s, c = torch.cat(boxes), torch.cat(scores), torch.cat(class_ids)
                keep = drop_cut_parts(b, c, torch.cat(cut), self.config.merge_threshold)
                b, s, c = self._merge(b[keep], s[keep], c[keep], self.config.merge_threshold)
                b, s, c = b[: self.max_det], s[: self.max_det], c[: self.max_det]
            else:
                b, s, c = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
            results.append(
                Detections(
                    boxes=b.numpy().astype(np.float32),
                    scores=s.numpy().astype(np.float32),
                    class_ids=c.numpy().astype(np.int64),
                    names=self.names,
                    image_hw=hw,
                    path=path,
                    image=img,
                )
            )
        tb.ms["postprocess"] = (time.perf_counter() - t0) * 1e3
        n = max(len(tb.images), 1)
        for r in results:
            r.timings = {k: tb.ms.get(k, 0.0) / n for k in STAGES}
        return results

    def predict_batch(
        self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None
    ) -> list[Detections]:
        """RGB uint8 arrays (H_i, W_i, 3) -> one merged Detections per image, in its pixels."""
        if not len(images):
            return []
        return self.finish(self.forward(self.prepare(images, paths)))

    def warmup(self) -> None:
        self.detector.warmup()
