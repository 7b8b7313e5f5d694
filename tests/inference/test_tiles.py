"""yolo4.inference.tiles: tile windows, IoS, merging, and seams that do not duplicate boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from yolo4.errors import Yolo4Error
from yolo4.inference import tiles
from yolo4.inference.detector import Batch, Detections, Detector
from yolo4.inference.tiles import (
    TileConfig,
    TiledDetector,
    box_ios,
    cut_by_tile,
    drop_cut_parts,
    merge_nmm,
    merge_nms,
    tile_windows,
)
from yolo4.ops.nms_config import DETECT_POSTPROCESS


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize(
    ("image_hw", "tile", "overlap"),
    [((200, 300), 100, 0.3), ((64, 64), 64, 0.2), ((50, 500), 128, 0.0), ((1000, 777), 256, 0.25), ((40, 30), 64, 0.5)],
)
def test_tile_windows_cover_the_image_inside_it_with_the_overlap(image_hw, tile, overlap):
    wins = tile_windows(image_hw, (tile, tile), overlap)
    h, w = image_hw
    covered = np.zeros(image_hw, bool)
    for x1, y1, x2, y2 in wins.tolist():
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert (y2 - y1, x2 - x1) == (min(tile, h), min(tile, w))  # every window is a full tile
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    # neighbours along x share at least overlap * tile pixels (rounded step)
    xs = sorted({x for x, *_ in wins.tolist()})
    for a, b in zip(xs, xs[1:]):
        assert min(tile, w) - (b - a) >= int(overlap * tile) - 1


def test_tile_windows_hand_computed():
    wins = tile_windows((200, 300), (100, 100), 0.3)  # step 70: x 0, 70, 140, 200; y 0, 70, 100
    assert sorted({x for x, *_ in wins.tolist()}) == [0, 70, 140, 200]
    assert sorted({y for _, y, *_ in wins.tolist()}) == [0, 70, 100]
    assert len(wins) == 12


def test_tile_config_rejects_bad_values():
    for bad in ({"size": 16}, {"overlap": 1.0}, {"merge": "union"}, {"merge_threshold": 0}, {"batch": 0}):
        with pytest.raises(Yolo4Error):
            TileConfig(**bad)
    assert TileConfig(size=(320, 480)).tile_hw == (320, 480)


# ------------------------------------------------------------------ merging
def test_box_ios_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [2, 2, 4, 4], [20, 20, 30, 30], [0, 0, 0, 5]])
    assert torch.allclose(box_ios(a, b), torch.tensor([[0.25, 1.0, 0.0, 0.0]]))
    assert box_ios(a, b[:0]).shape == (1, 0)


def test_merge_nmm_joins_a_part_with_its_whole_and_keeps_the_rest():
    boxes = torch.tensor(
        [
            [90.0, 10, 100, 30],  # the left part of an object cut by a tile edge
            [90.0, 10, 115, 30],  # the whole object, from the next tile
            [90.0, 10, 115, 30],  # the same object, another class: not merged
            [200.0, 10, 220, 30],  # elsewhere
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 0, 1, 0])
    b, s, c = merge_nmm(boxes, scores, classes, 0.5)
    assert b.tolist() == [[90.0, 10, 115, 30], [90.0, 10, 115, 30], [200.0, 10, 220, 30]]
    assert s.tolist() == pytest.approx([0.9, 0.7, 0.6]) and c.tolist() == [0, 1, 0]
    # a far weaker box around a confident one is suppressed without widening it
    b, s, c = merge_nmm(
        torch.tensor([[10.0, 10, 20, 20], [0, 0, 100, 100]]), torch.tensor([0.9, 0.01]), classes[:2], 0.5
    )
    assert b.tolist() == [[10.0, 10, 20, 20]] and s.tolist() == pytest.approx([0.9])
    # IoU-NMS keeps the part: IoU 0.4 < 0.5
    assert len(merge_nms(boxes, scores, classes, 0.5)[0]) == 4
    empty = merge_nmm(boxes[:0], scores[:0], classes[:0], 0.5)
    assert [t.shape[0] for t in empty] == [0, 0, 0]


# ------------------------------------------------------------------ seams
class _ComponentDetector:
    """Stands in for a Detector: finds every white blob of a tile, at any size, exactly; a larger
    (whole) view scores higher than a smaller one (a part)."""

    names, num_classes, input_hw, resize, device = ["blob"], 1, (64, 64), "stretch", "cpu"
    postprocess = DETECT_POSTPROCESS

    def prepare(self, images, paths=None):
        return Batch(list(images), [None] * len(images), torch.zeros(0), [])

    def forward(self, batch):
        return batch

    def finish(self, batch):
        out = []
        for img in batch.images:
            n, _, stats, _ = cv2.connectedComponentsWithStats((img[..., 0] > 128).astype(np.uint8))
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:n]], np.float32).reshape(-1, 4)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            scores = 0.5 + 0.4 * area / (area + 1e4)
            out.append(
                Detections(boxes, scores.astype(np.float32), np.zeros(len(boxes), np.int64), ["blob"], img.shape[:2])
            )
        return out

    def warmup(self):
        pass


def _canvas(rects):
    img = np.zeros((200, 300, 3), np.uint8)
    for x1, y1, x2, y2 in rects:
        img[y1:y2, x1:x2] = 255
    return img


def test_objects_on_tile_seams_are_found_once_with_their_whole_box(monkeypatch):
    # tiles of 100 px, overlap 0.3: x windows [0,100) [70,170) [140,240) [200,300), y [0,100) [70,170) [100,200)
    rects = [
        (75, 10, 95, 30),  # inside the overlap of two tiles: found whole twice
        (90, 40, 115, 60),  # cut by the first tile's right edge: a part there, whole in the next
        (150, 75, 165, 95),  # in the overlap of four tiles
        (10, 150, 30, 175),  # in one tile row overlap only
    ]
    image = _canvas(rects)
    for merge in ("nms", "nmm"):
        tiled = TiledDetector(_ComponentDetector(), TileConfig(size=100, overlap=0.3, full_image=False, merge=merge))
        [det] = tiled.predict_batch([image])
        assert sorted(map(tuple, det.boxes.tolist())) == sorted(tuple(map(float, r)) for r in rects), merge
        assert det.image_hw == (200, 300)
    # without the cut-view rule NMS keeps the part of the cut object: the test above can fail
    with monkeypatch.context() as m:
        m.setattr(tiles, "drop_cut_parts", lambda boxes, *a: torch.ones(len(boxes), dtype=torch.bool))
        [raw] = TiledDetector(_ComponentDetector(), TileConfig(size=100, overlap=0.3, full_image=False)).predict_batch(
            [image]
        )
    assert len(raw) == len(rects) + 1 and [90.0, 40.0, 100.0, 60.0] in raw.boxes.tolist()


def test_full_image_pass_adds_an_object_larger_than_a_tile():
    rects = [(20, 20, 180, 180)]  # larger than any 100 px tile: only parts in the tiles
    for merge in ("nms", "nmm"):
        tiled = TiledDetector(_ComponentDetector(), TileConfig(size=100, overlap=0.3, full_image=True, merge=merge))
        [det] = tiled.predict_batch([_canvas(rects)])
        assert det.boxes.tolist() == [[20.0, 20.0, 180.0, 180.0]], merge


def test_cut_views_are_the_boxes_on_inner_tile_sides():
    boxes = torch.tensor([[101.0, 10, 120, 30], [150, 10, 199, 30], [110, 0, 130, 20], [130, 50, 150, 80]])
    # tile (100, 0)-(200, 100) of a 300 x 100 image: its left and right sides are inside the image
    assert cut_by_tile(boxes, (100, 0, 200, 100), (100, 300)).tolist() == [True, True, False, False]
    assert cut_by_tile(boxes, (0, 0, 300, 100), (100, 300)).tolist() == [False] * 4  # the whole image: never cut
    keep = drop_cut_parts(
        torch.tensor([[90.0, 10, 100, 30], [90, 10, 115, 30], [0, 0, 10, 10]]),
        torch.tensor([0, 0, 0]),
        torch.tensor([True, False, True]),
        0.5,
    )
    assert keep.tolist() == [False, True, True]  # a part inside a whole box goes; a lone cut box stays


def test_tiled_real_detector_shifts_tile_boxes_into_the_image(tiny_cfg, fake_runner):
    # fake_runner puts one box at [32, 8, 64, 24] of every 64x64 input
    det = Detector(tiny_cfg, runner=fake_runner, names=["a", "b"])
    tiled = TiledDetector(det, TileConfig(size=64, overlap=0.0, full_image=False, batch=3))
    [res] = tiled.predict_batch([np.zeros((128, 128, 3), np.uint8)], ["big.jpg"])
    expected = sorted([32.0 + ox, 8.0 + oy, 64.0 + ox, 24.0 + oy] for oy in (0, 64) for ox in (0, 64))
    assert sorted(res.boxes.tolist()) == expected
    assert res.path == "big.jpg" and res.class_ids.tolist() == [1] * 4
    assert set(res.timings) == {"preprocess", "network", "postprocess"}
