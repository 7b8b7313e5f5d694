"""yolo4.evaluation.metrics against pycocotools run directly on files and against brute force."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from yolo4.evaluation.metrics import (
    COCO_STATS,
    coco_evaluate,
    confusion_matrix,
    darknet_voc_ap,
    interpolated_ap,
    write_coco_json,
)

NAMES = ["person", "car", "dog", "kite"]  # "kite" never appears in the ground truth


# ---------------------------------------------------------------- a small COCO-format dataset
def _dataset(seed: int = 0):
    """COCO-format ground truth and results (dicts), coordinates on a 0.5 px grid so that
    xywh <-> xyxy conversions are exact. Small, medium and large boxes; misses, false
    positives, duplicates, wrong classes, an image without objects, an image without
    detections, an image with 14 objects (AR1 < AR10 < AR100) and a class that only has
    false positives."""
    rng = np.random.default_rng(seed)
    cat_ids = [1, 3, 18, 38]  # non-contiguous, as in COCO
    images, anns, results = [], [], []
    sizes = {"small": (6, 30), "medium": (34, 90), "large": (100, 300)}
    counts = [3, 5, 0, 14, 4, 6, 2, 1]
    for i, n in enumerate(counts):
        image_id = 100 + 7 * i
        images.append({"id": image_id, "height": 480, "width": 640, "file_name": f"{i}.jpg"})
        for _ in range(n):
            lo, hi = sizes[rng.choice(list(sizes))]
            w, h = rng.uniform(lo, hi, 2).round() / 1
            x, y = rng.uniform(0, 640 - w) // 1, rng.uniform(0, 480 - h) // 1
            cls = int(rng.integers(0, 3))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[cls],
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
            if i == 5:  # the image without detections
                continue
            if rng.random() < 0.85:  # a detection near the object, with location noise
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                bx = np.array([x, y, w, h]) + jitter
                bx[2:] = np.maximum(bx[2:], 2)
                bx = (bx * 2).round() / 2
                pcls = cls if rng.random() < 0.85 else int(rng.integers(0, 4))
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": cat_ids[pcls],
                        "bbox": [float(v) for v in bx],
                        "score": float(rng.uniform(0.05, 1)),
                    }
                )
                if rng.random() < 0.2:  # a duplicate
                    results.append(
                        {
                            "image_id": image_id,
                            "category_id": cat_ids[pcls],
                            "bbox": [float(v + 1.5) for v in bx],
                            "score": float(rng.uniform(0, 0.5)),
                        }
                    )
        if i == 5:
            continue
        for _ in range(int(rng.integers(1, 4))):  # false positives
            w, h = (rng.uniform(5, 200, 2) * 2).round() / 2
            x, y = (rng.uniform(0, 400, 2) * 2).round() / 2
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat_ids[int(rng.integers(0, 4))],
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": float(rng.uniform(0, 0.6)),
                }
            )
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": n} for c, n in zip(cat_ids, NAMES)]}
    return gt, results


def _to_lists(gt: dict, results: list[dict]):
    """COCO dicts -> this project's per-image xyxy lists (class index = position in categories)."""
    image_ids = [im["id"] for im in gt["images"]]
    cat_ids = [c["id"] for c in gt["categories"]]
    cls_of = {c: k for k, c in enumerate(cat_ids)}

    def xyxy(bb):
        return [bb[0], bb[1], bb[0] + bb[2], bb[1] + bb[3]]

    gts, preds = [], []
    for image_id in image_ids:
        a = [x for x in gt["annotations"] if x["image_id"] == image_id]
        gts.append(
            (
                np.array([xyxy(x["bbox"]) for x in a]).reshape(-1, 4),
                np.array([cls_of[x["category_id"]] for x in a], dtype=np.int64),
            )
        )
        r = [x for x in results if x["image_id"] == image_id]
        preds.append(
            (
                np.array([xyxy(x["bbox"]) for x in r]).reshape(-1, 4),
                np.array([x["score"] for x in r]),
                np.array([cls_of[x["category_id"]] for x in r], dtype=np.int64),
            )
        )
    sizes = [(im["height"], im["width"]) for im in gt["images"]]
    return gts, preds, image_ids, cat_ids, sizes


def _pycocotools_on_files(gt_path, res_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(res_path))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _same(ours: float, theirs: float) -> bool:
    """COCOeval's -1 ("no ground truth") is NaN here."""
    return math.isnan(ours) if theirs == -1 else ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_coco_number_equals_pycocotools_on_files(tmp_path, seed):
    gt, results = _dataset(seed)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    ev = _pycocotools_on_files(gt_path, res_path)

    gts, preds, image_ids, cat_ids, sizes = _to_lists(json.loads(gt_path.read_text()), json.loads(res_path.read_text()))
    m = coco_evaluate(gts, preds, NAMES, image_sizes=sizes, image_ids=image_ids, category_ids=cat_ids)

    assert len(ev.stats) == len(COCO_STATS) == 12
    for name, theirs in zip(COCO_STATS, ev.stats):
        assert _same(getattr(m, name), theirs), (name, getattr(m, name), theirs)
    # the dataset is built so that the numbers are informative, not all 0 / 1 / equal
    assert 0.05 < m.map < m.map50 < 1
    assert m.ar1 < m.ar10 <= m.ar100
    assert not math.isnan(m.map_small) and not math.isnan(m.map_medium) and not math.isnan(m.map_large)

    # per class, straight from COCOeval's precision array [T, R, K, A, M]
    p = ev.eval["precision"]
    for k in range(len(NAMES)):
        pk = p[:, :, k, 0, -1]
        if (pk > -1).any():
            assert m.ap_per_class[k] == pytest.approx(pk[pk > -1].mean(), abs=1e-12)
            assert m.ap50_per_class[k] == pytest.approx(pk[0].mean(), abs=1e-12)
            np.testing.assert_allclose(m.precision_curves[k], pk[0], atol=1e-12)
        else:
            assert math.isnan(m.ap_per_class[k]) and math.isnan(m.ap50_per_class[k])
    assert math.isnan(m.ap_per_class[3])  # "kite": false positives only, absent from gt
    # COCO's mean leaves out absent classes
    assert m.map == pytest.approx(np.nanmean(m.ap_per_class), abs=1e-12)
    assert m.map50 == pytest.approx(np.nanmean(m.ap50_per_class), abs=1e-12)
    assert m.num_gt.sum() == len(gt["annotations"])
    assert m.num_predictions == len(results)


def test_write_coco_json_is_accepted_by_loadres(tmp_path):
    gt, results = _dataset(3)
    gts, preds, image_ids, cat_ids, sizes = _to_lists(gt, results)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    res_path = write_coco_json(preds, image_ids, tmp_path / "sub" / "preds.json", category_ids=cat_ids)
    ev = _pycocotools_on_files(gt_path, res_path)
    m = coco_evaluate(gts, preds, NAMES, image_ids=image_ids, category_ids=cat_ids)
    for name, theirs in zip(COCO_STATS, ev.stats):
        assert _same(getattr(m, name), theirs), name
    written = json.loads(res_path.read_text())
    assert len(written) == len(results)
    assert {"image_id", "category_id", "bbox", "score"} <= set(written[0])


# ---------------------------------------------------------------- hand-checked values and edges
def _box(x1, y1, x2, y2):
    return [x1, y1, x2, y2]


def test_perfect_predictions_score_one_and_absent_class_is_nan():
    gts = [
        (np.array([_box(10, 10, 60, 60), _box(100, 100, 300, 260)]), np.array([0, 1])),
        (np.array([_box(5, 5, 20, 25)]), np.array([0])),
    ]
    preds = [(g[0].copy(), np.array([0.9, 0.8][: len(g[1])]), g[1].copy()) for g in gts]
    m = coco_evaluate(gts, preds, ["a", "b", "c"])
    for name in ("map", "map50", "map75", "ar100", "darknet_map50_101", "darknet_map50_11"):
        assert getattr(m, name) == pytest.approx(1.0), name
    assert math.isnan(m.ap_per_class[2]) and math.isnan(m.darknet_ap50_per_class_101[2])
    assert m.confusion.tolist() == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_empty_images_no_predictions_and_torch_inputs():
    gts = [(torch.tensor([[0.0, 0, 50, 50]]), torch.tensor([1])), (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
    preds = [(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))] * 2
    m = coco_evaluate(gts, preds, ["a", "b"])
    assert m.map == 0 and m.map50 == 0 and m.ar100 == 0
    assert math.isnan(m.ap_per_class[0]) and m.ap_per_class[1] == 0
    assert m.darknet_map50_101 == 0
    assert m.confusion[1, 2] == 1 and m.confusion.sum() == 1  # one miss


def test_no_ground_truth_at_all_is_nan_not_a_crash():
    gts = [(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))]
    preds = [(np.array([[1.0, 1, 9, 9]]), np.array([0.7]), np.array([0]))]
    m = coco_evaluate(gts, preds, ["a"])
    assert all(math.isnan(getattr(m, k)) for k in COCO_STATS)
    assert math.isnan(m.darknet_map50_101)
    assert m.confusion.tolist() == [[0, 0], [1, 0]]  # one false positive
    assert "nan" in m.summary() and "a" in m.table()


def test_inputs_are_validated():
    gts = [(np.zeros((1, 4)), np.array([5]))]
    preds = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))]
    with pytest.raises(ValueError, match="class id 5"):
        coco_evaluate(gts, preds, ["a"])
    with pytest.raises(ValueError, match="prediction images"):
        coco_evaluate(gts, preds * 2, ["a"])


def test_inputs_are_not_modified():
    gt, results = _dataset(4)
    gts, preds, *_ = _to_lists(gt, results)
    before = [(g[0].copy(), g[1].copy()) for g in gts], [(p[0].copy(), p[1].copy(), p[2].copy()) for p in preds]
    coco_evaluate(gts, preds, NAMES)
    for (a, b), (c, d) in zip(gts, before[0]):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    for (a, b, c), (d, e, f) in zip(preds, before[1]):
        assert np.array_equal(a, d) and np.array_equal(b, e) and np.array_equal(c, f)


# ---------------------------------------------------------------- darknet-style VOC mAP@0.5
def test_interpolated_ap_hand_computed():
    # 2 ground truths; ranked detections TP, FP, TP -> recall .5 .5 1, precision 1 .5 2/3
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    assert interpolated_ap(recall, precision, 101) == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert interpolated_ap(recall, precision, 11) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert interpolated_ap(np.zeros(0), np.zeros(0), 101) == 0.0


def _brute_force_voc_ap(gts, preds, num_classes, points):
    """Independent reference: plain Python loops, darknet's rules (IoU > 0.5 with the
    best-overlapping ground truth of the class, which must be unclaimed; all detections of
    a class ranked by score; precision at `points` recall levels = max precision at any
    rank whose recall reaches the level)."""

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    aps = []
    for c in range(num_classes):
        n_gt = sum(int(k == c) for g in gts for k in g[1])
        if n_gt == 0:
            aps.append(float("nan"))
            continue
        flagged = []  # (score, image index, detection index, is_tp)
        for i, (g, p) in enumerate(zip(gts, preds)):
            truths = [list(b) for b, k in zip(g[0], g[1]) if k == c]
            dets = sorted([(float(s), j) for j, (s, k) in enumerate(zip(p[1], p[2])) if k == c], key=lambda t: -t[0])
            claimed = [False] * len(truths)
            for s, j in dets:
                best, best_iou = -1, 0.0
                for t, tb in enumerate(truths):
                    v = iou(list(p[0][j]), tb)
                    if v > best_iou:
                        best, best_iou = t, v
                hit = best >= 0 and best_iou > 0.5 and not claimed[best]
                if hit:
                    claimed[best] = True
                flagged.append((s, i, j, hit))
        flagged.sort(key=lambda t: (-t[0], t[1]))
        tp = fp = 0
        curve = []
        for *_, hit in flagged:
            tp, fp = tp + hit, fp + (not hit)
            curve.append((tp / n_gt, tp / (tp + fp)))
        total = 0.0
        for point in range(points):
            level = point / (points - 1)
            total += max([pr for rc, pr in curve if rc >= level], default=0.0)
        aps.append(total / points)
    return np.array(aps)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_darknet_map_equals_brute_force(seed):
    gt, results = _dataset(seed)
    gts, preds, *_ = _to_lists(gt, results)
    for points in (101, 11):
        ours = darknet_voc_ap(gts, preds, len(NAMES), points=points)
        ref = _brute_force_voc_ap(gts, preds, len(NAMES), points)
        np.testing.assert_allclose(ours, ref, atol=1e-12, equal_nan=True)
    m = coco_evaluate(gts, preds, NAMES)
    np.testing.assert_allclose(
        m.darknet_ap50_per_class_101, _brute_force_voc_ap(gts, preds, 4, 101), atol=1e-12, equal_nan=True
    )
    assert m.darknet_map50_101 == pytest.approx(np.nanmean(m.darknet_ap50_per_class_101))
    assert m.darknet_map50_11 == pytest.approx(np.nanmean(m.darknet_ap50_per_class_11))


def test_darknet_101_point_equals_coco_ap50_without_conflicts():
    """Disjoint ground truth, <= 100 detections per image, distinct scores and class counts
    prime to 100: the darknet and COCO rules coincide, so the two AP50s must agree."""
    rng = np.random.default_rng(0)
    gts, preds = [], []
    counts = {0: 0, 1: 0}
    for _i in range(9):
        boxes, classes = [], []
        for r in range(2):
            for col in range(3):
                if rng.random() < 0.6:
                    x, y = 10 + 200 * col, 10 + 200 * r
                    boxes.append([x, y, x + rng.uniform(40, 150), y + rng.uniform(40, 150)])
                    classes.append(int(rng.integers(0, 2)))
        gb = np.array(boxes).reshape(-1, 4)
        gc = np.array(classes, dtype=np.int64)
        for k in gc:
            counts[int(k)] += 1
        pb = np.concatenate([gb + rng.normal(0, 8, gb.shape), rng.uniform(0, 500, (3, 4)).cumsum(1) / 2])
        pc = np.concatenate([gc, rng.integers(0, 2, 3)])
        gts.append((gb, gc))
        preds.append((pb, rng.uniform(0, 1, len(pb)), pc))
    assert all(n % 2 and n % 5 for n in counts.values()), counts  # recall never k/100 exactly
    m = coco_evaluate(gts, preds, ["a", "b"])
    np.testing.assert_allclose(m.darknet_ap50_per_class_101, m.ap50_per_class, atol=1e-12)
    assert 0.2 < m.map50 < 1


# ---------------------------------------------------------------- confusion matrix
def test_confusion_matrix_hand_computed():
    gts = [(np.array([_box(0, 0, 10, 10), _box(20, 20, 40, 40), _box(50, 50, 60, 60)]), np.array([0, 1, 1]))]
    preds = [
        (
            np.array(
                [
                    _box(0, 0, 10, 11),  # class 0 right
                    _box(20, 20, 40, 41),  # class 1 called class 0
                    _box(80, 80, 90, 90),  # false positive class 1
                    _box(50, 50, 60, 60),
                ]
            ),  # below the score threshold -> the gt is missed
            np.array([0.9, 0.8, 0.7, 0.1]),
            np.array([0, 0, 1, 1]),
        )
    ]
    m = confusion_matrix(gts, preds, 2, conf=0.25, iou=0.5)
    assert m.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]


def test_table_lists_worst_classes_first():
    gts = [(np.array([_box(0, 0, 10, 10), _box(20, 20, 40, 40)]), np.array([0, 1]))]
    preds = [(np.array([_box(0, 0, 10, 10), _box(20, 20, 30, 30)]), np.array([0.9, 0.8]), np.array([0, 1]))]
    m = coco_evaluate(gts, preds, ["good", "bad"])
    lines = m.table().splitlines()
    assert lines[1].split()[0] == "all"
    assert [ln.split()[0] for ln in lines[2:]] == ["bad", "good"]
    d = m.to_dict()
    assert set(COCO_STATS) <= set(d) and d["map50"] == pytest.approx(0.5)
    assert m.per_class_dict()["good"]["ap50"] == pytest.approx(1.0)
    assert "darknet-style" in m.summary()


def test_more_than_100_detections_per_image_matches_pycocotools(tmp_path):
    """COCO keeps the 100 best detections per image: the in-memory path must do exactly
    what pycocotools does on files, and darknet-style AP (which keeps all) may differ."""
    rng = np.random.default_rng(11)
    gt = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": f"c{k}"} for k in range(5)]}
    results = []
    for i in range(12):
        gt["images"].append({"id": i + 1, "height": 600, "width": 800})
        for _ in range(int(rng.integers(20, 60))):
            x, y, w, h = rng.integers(0, 500, 2).tolist() + rng.integers(4, 250, 2).tolist()
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 6)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            for _ in range(3):
                jit = (rng.normal(0, 0.1, 4) * [w, h, w, h] * 2).round() / 2
                results.append(
                    {
                        "image_id": i + 1,
                        "category_id": int(rng.integers(1, 6)),
                        "bbox": [x + jit[0], y + jit[1], max(w + jit[2], 1.0), max(h + jit[3], 1.0)],
                        "score": float(rng.random()),
                    }
                )
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    ev = _pycocotools_on_files(gt_path, res_path)
    gts, preds, image_ids, cat_ids, _ = _to_lists(gt, results)
    assert max(len(p[1]) for p in preds) > 150
    m = coco_evaluate(gts, preds, [c["name"] for c in gt["categories"]], image_ids=image_ids, category_ids=cat_ids)
    for name, theirs in zip(COCO_STATS, ev.stats):
        assert _same(getattr(m, name), theirs), (name, getattr(m, name), theirs)
    np.testing.assert_allclose(m.darknet_ap50_per_class_101, _brute_force_voc_ap(gts, preds, 5, 101), atol=1e-12)


def test_precision_and_recall_at_conf_come_from_the_confusion_matrix():
    gts = [(np.array([_box(0, 0, 10, 10), _box(20, 20, 40, 40), _box(50, 50, 70, 70)]), np.array([0, 0, 1]))]
    preds = [
        (
            np.array([_box(0, 0, 10, 10), _box(20, 20, 40, 40), _box(80, 80, 99, 99), _box(50, 50, 70, 70)]),
            np.array([0.9, 0.1, 0.6, 0.7]),
            np.array([0, 0, 0, 1]),
        )
    ]
    m = coco_evaluate(gts, preds, ["a", "b"])
    # class a: 2 confident detections (one right, one background), 2 objects (one found)
    np.testing.assert_allclose(m.precision_at_conf, [0.5, 1.0])
    np.testing.assert_allclose(m.recall_at_conf, [0.5, 1.0])
    row = m.per_class_dict()["a"]
    assert row["instances"] == 2 and row["images"] == 1 and row["precision"] == 0.5


def test_comparison_table_one_row_per_model():
    from yolo4.evaluation.metrics import comparison_table

    gts = [(np.array([_box(0, 0, 10, 10)]), np.array([0]))]
    good = coco_evaluate(gts, [(np.array([_box(0, 0, 10, 10)]), np.array([0.9]), np.array([0]))], ["a"])
    bad = coco_evaluate(gts, [(np.array([_box(5, 5, 15, 15)]), np.array([0.9]), np.array([0]))], ["a"])
    good.speed = {"preprocess_ms": 1.0, "inference_ms": 4.0, "nms_ms": 0.5, "fps": 250.0}
    rows = comparison_table(["float32.onnx", "int8.onnx"], [good, bad]).splitlines()
    assert rows[0].split()[:5] == ["model", "AP", "AP50", "AP75", "dn-AP50"]
    assert rows[1].split() == ["float32.onnx", "1.000", "1.000", "1.000", "1.000", "1.00", "4.00", "0.50", "250.0"]
    assert rows[2].split()[1:5] == ["0.000", "0.000", "0.000", "0.000"] and rows[2].split()[-1] == "-"


@pytest.mark.parametrize("seed", [0, 1])
def test_paired_bootstrap_equals_scoring_each_resample_from_scratch(seed):
    """Each resample's difference is darknet_voc_ap of the resampled image lists (brute force: the
    same draws, every image matched again), and the interval is their percentiles."""
    from yolo4.evaluation.metrics import paired_bootstrap

    gt, results = _dataset(seed)
    gts, preds, *_ = _to_lists(gt, results)
    rng = np.random.default_rng(seed + 10)
    worse = [(b, s * rng.uniform(0.5, 1.0, len(s)), c) for b, s, c in preds]  # other scores: another ranking
    delta, lo, hi = paired_bootstrap(gts, preds, worse, len(NAMES), resamples=50, seed=seed)
    draws = []
    draw = np.random.default_rng(seed)
    for _ in range(50):
        take = draw.integers(0, len(gts), len(gts))
        g = [gts[i] for i in take]
        a = np.nanmean(darknet_voc_ap(g, [preds[i] for i in take], len(NAMES)))
        b = np.nanmean(darknet_voc_ap(g, [worse[i] for i in take], len(NAMES)))
        draws.append(b - a)
    full = np.nanmean(darknet_voc_ap(gts, worse, len(NAMES))) - np.nanmean(darknet_voc_ap(gts, preds, len(NAMES)))
    assert delta == pytest.approx(full, abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(np.nanpercentile(draws, [2.5, 97.5])), abs=1e-12)
    assert lo <= hi
    assert paired_bootstrap(gts, preds, preds, len(NAMES), resamples=20) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap(gts, preds, preds[:-1], len(NAMES))
