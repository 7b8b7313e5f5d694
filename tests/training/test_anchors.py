"""Anchor fit, k-means, the start-of-run anchor check and `yolo4 anchors`."""

from __future__ import annotations

import numpy as np
import pytest

from yolo4.models.zoo import build
from yolo4.training.anchors import (
    anchor_fit,
    check_anchors,
    kmeans_anchors,
    run_anchors,
    train_box_sizes,
    used_anchors,
    wh_iou_np,
)


def test_wh_iou_matches_a_loop():
    rng = np.random.default_rng(0)
    wh, anchors = rng.uniform(1, 100, (7, 2)), rng.uniform(1, 100, (4, 2))
    out = wh_iou_np(wh, anchors)
    for i in range(7):
        for k in range(4):
            inter = min(wh[i, 0], anchors[k, 0]) * min(wh[i, 1], anchors[k, 1])
            assert out[i, k] == pytest.approx(inter / (wh[i].prod() + anchors[k].prod() - inter))


def test_anchor_fit_by_hand():
    # box 10x10 vs anchors 10x10 (IoU 1) and 20x40; box 50x10: best is 20x40 (IoU 200 / 1300), 10x10 (100/500)
    fit = anchor_fit(np.array([[10, 10], [50, 10]]), [(10, 10), (20, 40)])
    assert fit.mean_iou == pytest.approx((1.0 + 0.2) / 2)
    assert fit.recall50 == 0.5
    # 50x10 against 10x10: 5x too wide; against 20x40: 2.5x wide, 4x too low -> reachable (limit 4)
    assert fit.bpr == 1.0
    assert anchor_fit(np.array([[50, 10]]), [(10, 10)]).bpr == 0.0
    assert np.isnan(anchor_fit(np.zeros((0, 2)), [(1, 1)]).mean_iou)


def test_kmeans_beats_or_equals_any_anchor_set_on_its_clusters():
    rng = np.random.default_rng(1)
    wh = np.concatenate([rng.normal(c, 2, (60, 2)) for c in ((20, 30), (80, 60), (200, 220))]).clip(1)
    km = kmeans_anchors(wh, 3)
    assert anchor_fit(wh, km).mean_iou > 0.85
    assert anchor_fit(wh, km).mean_iou > anchor_fit(wh, [(10, 14), (23, 27), (37, 58)]).mean_iou


def test_check_anchors_switches_only_when_the_cfg_fits_badly():
    spec = build("yolov4-tiny", num_classes=1, img_size=320)
    assert used_anchors(spec) == [(23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]
    rng = np.random.default_rng(2)
    # boxes drawn around the cfg's own anchors: they fit, keep them
    near = np.concatenate([rng.normal(a, 0.05 * np.array(a), (40, 2)) for a in used_anchors(spec)]).clip(1)
    assert not check_anchors(spec, near, 320).use_kmeans
    # large boxes only: the cfg's small anchors are wasted, k-means fits much better
    big = rng.uniform(120, 300, (200, 2))
    report = check_anchors(spec, big, 320)
    assert report.use_kmeans and report.kmeans_fit.mean_iou > report.cfg_fit.mean_iou
    assert report.cfg_line().startswith("anchors = ") and len(report.kmeans) == 6
    # too few boxes for k-means: keep the cfg's
    assert not check_anchors(spec, big[:5], 320).use_kmeans


class _Boxes:
    """A dataset stand-in: two images of different sizes, one box each."""

    image_hw = np.array([[100, 200], [400, 100]])

    def __len__(self) -> int:
        return 2

    def labels(self, i):
        b = [np.array([[0, 0, 50, 50]], np.float32), np.array([[10, 10, 30, 110]], np.float32)][i]
        return b, np.zeros(len(b), np.int64)


def test_train_box_sizes_resize_each_image_as_training_does():
    # stretched to 320x320: x by 320 / width, y by 320 / height, per image
    np.testing.assert_allclose(train_box_sizes(_Boxes(), 320), [[80, 160], [64, 80]])
    # letterboxed: both by 320 / the longer side
    np.testing.assert_allclose(train_box_sizes(_Boxes(), 320, letterbox=True), [[80, 80], [16, 80]])


def test_run_anchors_prints_fits_and_a_cfg_line(tmp_path, capsys):
    from yolo4.data.shapes import ShapesConfig, make_shapes

    data = make_shapes(
        tmp_path / "s",
        ShapesConfig(num_train=12, num_val=2, img_size=64, size_range=(10, 32), num_objects=(1, 3)),
        workers=0,
        progress=False,
    )
    report = run_anchors(data, "yolov4-tiny", img_size=64)
    out = capsys.readouterr().out
    assert "cfg anchors" in out and "k-means anchors" in out and report.cfg_line() in out
    assert "mask = 0,1,2" in out and report.boxes > 12
    from yolo4.cli import main

    assert main(["anchors", "--data", str(data), "--model", "yolov4-tiny", "--img-size", "64"]) == 0
    assert "anchors = " in capsys.readouterr().out
    assert main(["anchors", "--data", str(data), "--img-size", "50"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
