"""The embedded shapes dataset: deterministic, idempotent, exact labels, and not trivial."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolo4.data.dataset import load_dataset
from yolo4.data.shapes import (
    SHAPES_NAMES,
    ShapesConfig,
    _shape_mask,
    make_shapes,
    render_shapes_image,
)
from yolo4.errors import DataError

SMALL = ShapesConfig(num_train=12, num_val=4)


def _digest(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".yolo4-cache" not in p.parts and p.name != "data.yaml":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_yaml(shapes_small):
    root = shapes_small.parent
    meta = yaml.safe_load(shapes_small.read_text())
    assert meta["names"] == list(SHAPES_NAMES) and len(SHAPES_NAMES) >= 6
    assert (meta["train"], meta["val"]) == ("images/train", "images/val")
    assert len(list((root / "images" / "train").glob("*.jpg"))) == 40
    assert len(list((root / "labels" / "val").glob("*.txt"))) == 20


def test_deterministic_bytes_whatever_the_worker_count(tmp_path):
    a = make_shapes(tmp_path / "a", SMALL, workers=1, progress=False).parent
    b = make_shapes(tmp_path / "b", SMALL, workers=2, progress=False).parent
    assert _digest(a) == _digest(b)
    c = make_shapes(tmp_path / "c", ShapesConfig(num_train=12, num_val=4, seed=1), progress=False).parent
    assert _digest(a) != _digest(c)


def test_idempotent_and_rebuilds_half_written(tmp_path):
    root = make_shapes(tmp_path / "s", SMALL, progress=False).parent
    digest = _digest(root)
    victim = root / "images" / "train" / "000003.jpg"
    mtime = victim.stat().st_mtime_ns
    make_shapes(root, SMALL, progress=False)
    assert victim.stat().st_mtime_ns == mtime  # reused, not rewritten
    victim.unlink()  # now incomplete
    make_shapes(root, SMALL, progress=False)
    assert victim.is_file() and _digest(root) == digest
    make_shapes(root, ShapesConfig(num_train=5, num_val=2), progress=False)  # another config: rebuilt
    assert len(list((root / "images" / "train").iterdir())) == 5
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp folder left behind


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a shapes dataset"):
        make_shapes(tmp_path / "mine", SMALL, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_bad_config_raises():
    with pytest.raises(DataError):
        ShapesConfig(classes=("circle", "dragon"))
    with pytest.raises(DataError):
        ShapesConfig(size_range=(10, 300), img_size=256)


def test_labels_on_disk_match_the_rendered_boxes(shapes_small):
    ds = load_dataset(shapes_small, "val")
    for i in range(5):
        idx = int(Path(ds.image_paths[i]).stem)
        _, boxes, cls = render_shapes_image(ShapesConfig(num_train=40, num_val=20), "val", idx)
        got_b, got_c = ds.labels(i)
        np.testing.assert_array_equal(got_c, cls)
        np.testing.assert_allclose(got_b, boxes, atol=1e-3)


def test_box_is_the_tight_box_of_the_visible_mask():
    cfg = ShapesConfig()
    for i in range(10):
        _, boxes, cls, masks = render_shapes_image(cfg, "train", i, return_masks=True)
        assert len(boxes) == len(cls) == len(masks) >= cfg.num_objects[0]
        for b, m in zip(boxes, masks):
            ys, xs = np.nonzero(m)
            np.testing.assert_array_equal(b, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_box_matches_the_drawn_pixels():
    # one object, no noise, no lines: the pixels of the object's colour (give or take the
    # slight blur) fill the labelled box to its four sides and do not leave it
    cfg = ShapesConfig(num_objects=(1, 1), noise_range=(0.0, 0.0), num_lines=(0, 0), size_range=(24, 100))
    for i in range(8):
        img, boxes, _, masks = render_shapes_image(cfg, "train", i, return_masks=True)
        colour = np.median(img[masks[0]], 0)
        near = np.abs(img.astype(float) - colour).sum(2) <= 40
        x1, y1, x2, y2 = boxes[0]
        ys, xs = np.nonzero(near)
        inside = (xs >= x1 - 2) & (xs < x2 + 2) & (ys >= y1 - 2) & (ys < y2 + 2)
        assert inside.mean() > 0.97  # nearly every pixel of that colour is inside the box
        xs, ys = xs[inside], ys[inside]
        assert abs(xs.min() - x1) <= 2 and abs(xs.max() + 1 - x2) <= 2
        assert abs(ys.min() - y1) <= 2 and abs(ys.max() + 1 - y2) <= 2


def test_every_class_and_a_wide_range_of_sizes_appear():
    cfg = ShapesConfig()
    sizes, classes = [], []
    for i in range(60):
        _, b, c = render_shapes_image(cfg, "train", i)
        sizes += np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).tolist()
        classes += c.tolist()
    assert set(classes) == set(range(len(SHAPES_NAMES)))
    assert min(sizes) < 14 and max(sizes) > 80
    assert 3 <= len(classes) / 60 <= 10


def test_shape_masks_differ_between_classes():
    masks = {n: _shape_mask(n, 40, 1.0, 0.0, 64) for n in SHAPES_NAMES}
    for a in SHAPES_NAMES:
        for b in SHAPES_NAMES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.9, (a, b, iou)


# ---------------------------------------------------------------- trivial baselines stay low
def _voc_ap50(preds, gts, num_classes: int) -> float:
    """Self-contained VOC-style (all-point) mAP at IoU 0.5.

    preds: per image (boxes (P, 4), scores (P,), classes (P,)); gts: per image (boxes, classes)."""
    aps = []
    for c in range(num_classes):
        dets = [(s, i, b) for i, (pb, ps, pc) in enumerate(preds) for b, s, k in zip(pb, ps, pc) if k == c]
        dets.sort(key=lambda t: -t[0])
        gt = {i: g[0][g[1] == c] for i, g in enumerate(gts)}
        used = {i: np.zeros(len(v), bool) for i, v in gt.items()}
        npos = sum(len(v) for v in gt.values())
        if npos == 0:
            continue
        tp = np.zeros(len(dets))
        for k, (_, i, b) in enumerate(dets):
            g = gt[i]
            if len(g) == 0:
                continue
            iw = (np.minimum(g[:, 2], b[2]) - np.maximum(g[:, 0], b[0])).clip(0)
            ih = (np.minimum(g[:, 3], b[3]) - np.maximum(g[:, 1], b[1])).clip(0)
            inter = iw * ih
            iou = inter / ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
            j = int(iou.argmax())
            if iou[j] >= 0.5 and not used[i][j]:
                used[i][j] = True
                tp[k] = 1
        ctp = np.cumsum(tp)
        rec = ctp / npos
        prec = ctp / np.arange(1, len(dets) + 1)
        mrec = np.concatenate([[0], rec, [1]])
        mpre = np.concatenate([[0], prec, [0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
        aps.append(float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum()))
    return float(np.mean(aps))


@pytest.fixture(scope="module")
def val_labels():
    cfg = ShapesConfig()
    return [render_shapes_image(cfg, "val", i)[1:] for i in range(120)], cfg.img_size


def test_ap_function_scores_the_oracle_one(val_labels):
    gts, _ = val_labels
    oracle = [(b, np.ones(len(b)), c) for b, c in gts]
    assert _voc_ap50(oracle, gts, len(SHAPES_NAMES)) == pytest.approx(1.0)


def test_trivial_baselines_stay_below_map50_0p2(val_labels):
    gts, n = val_labels
    rng = np.random.default_rng(0)
    k = len(SHAPES_NAMES)
    all_boxes = np.concatenate([b for b, _ in gts])
    mean_wh = (all_boxes[:, 2:] - all_boxes[:, :2]).mean(0)
    # 1. one box of the mean size in the centre, once per class
    centre = np.array([n / 2 - mean_wh[0] / 2, n / 2 - mean_wh[1] / 2, n / 2 + mean_wh[0] / 2, n / 2 + mean_wh[1] / 2])
    one_box = [(np.repeat(centre[None], k, 0), np.ones(k), np.arange(k)) for _ in gts]
    # 2. a 4x4 grid of mean-size boxes, every class, random scores
    g = (np.arange(4) + 0.5) * n / 4
    cx, cy = np.meshgrid(g, g)
    grid = np.stack(
        [
            cx.ravel() - mean_wh[0] / 2,
            cy.ravel() - mean_wh[1] / 2,
            cx.ravel() + mean_wh[0] / 2,
            cy.ravel() + mean_wh[1] / 2,
        ],
        1,
    )
    grid_all = np.repeat(grid, k, 0)
    grid_pred = [(grid_all, rng.random(len(grid_all)), np.tile(np.arange(k), len(grid))) for _ in gts]

    # 3. 50 random boxes per image, random classes and scores
    def rand_boxes():
        xy = rng.uniform(0, n, (50, 2))
        wh = np.exp(rng.uniform(np.log(10), np.log(128), (50, 2)))
        return np.concatenate([xy, np.minimum(xy + wh, n)], 1)

    random_pred = [(rand_boxes(), rng.random(50), rng.integers(0, k, 50)) for _ in gts]
    # 4. perfect localisation, no idea of the class: every true box once per class, random scores
    where_not_what = [(np.repeat(b, k, 0), rng.random(len(b) * k), np.tile(np.arange(k), len(b))) for b, _ in gts]
    scores = {
        name: _voc_ap50(p, gts, k)
        for name, p in [
            ("centre", one_box),
            ("grid", grid_pred),
            ("random", random_pred),
            ("boxes-only", where_not_what),
        ]
    }
    assert all(v < 0.2 for v in scores.values()), scores
    print(scores)
    assert scores["boxes-only"] > 0.05  # the AP function is not simply returning 0
