"""yolo4.ops.nms: candidate selection, greedy / agnostic / DIoU-NMS, postprocess."""

from __future__ import annotations

import pytest
import torch

from yolo4.ops.nms import (
    CANDIDATES,
    DETECT_POSTPROCESS,
    VAL_POSTPROCESS,
    PostprocessConfig,
    agnostic_nms,
    batched_postprocess,
    diou_nms,
    get_nms,
    greedy_nms,
    postprocess,
    select_all_classes,
    select_best_class,
)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _diounms(a, b, beta):
    """darknet's box_diounms on python floats."""
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    c = cw * cw + ch * ch
    if c == 0:
        return _iou(a, b)
    d = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    return _iou(a, b) - (d / c) ** beta


def _greedy_ref(boxes, scores, classes, thresh, overlap, agnostic=False):
    """The textbook loop: visit boxes by decreasing score; keep one unless a kept box of
    the same class (any class if agnostic) overlaps it by more than thresh."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(overlap(boxes[k], boxes[i]) <= thresh or (not agnostic and classes[k] != classes[i]) for k in kept):
            kept.append(i)
    return kept


def _random_boxes(seed, n, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 2, generator=g) * 80
    boxes = torch.cat([p, p + 5 + torch.rand(n, 2, generator=g) * 40], 1)
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, n_classes, (n,), generator=g)
    return boxes, scores, classes


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beta", [0.6, 1.0])
def test_diou_nms_matches_brute_force(seed, beta):
    boxes, scores, classes = _random_boxes(seed, 60)
    copies = boxes.clone(), scores.clone(), classes.clone()
    keep = diou_nms(boxes, scores, classes, 0.3, beta=beta)
    ref = _greedy_ref(boxes.tolist(), scores.tolist(), classes.tolist(), 0.3, lambda a, b: _diounms(a, b, beta))
    assert keep.tolist() == ref
    assert 0 < len(ref) < 60  # the case exercises suppression both ways
    assert all(torch.equal(x, y) for x, y in zip((boxes, scores, classes), copies))


@pytest.mark.parametrize("block", [1, 7, 64])
def test_diou_nms_blocks_give_the_same_exact_answer(block):
    boxes, scores, classes = _random_boxes(7, 80, n_classes=1)  # one class: long suppression chains
    ref = _greedy_ref(boxes.tolist(), scores.tolist(), classes.tolist(), 0.2, lambda a, b: _diounms(a, b, 0.6))
    assert diou_nms(boxes, scores, classes, 0.2, block=block).tolist() == ref
    assert 1 < len(ref) < 70  # suppression happened, within and across blocks


def test_diou_keeps_what_greedy_drops():
    # IoU 0.5 but centres apart: DIoU = 0.5 - (25/500)^0.6 = 0.334
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]])
    scores, classes = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    assert greedy_nms(boxes, scores, classes, 0.45).tolist() == [0]
    assert diou_nms(boxes, scores, classes, 0.45).tolist() == [0, 1]
    assert diou_nms(boxes, scores, classes, 0.3).tolist() == [0]
    assert diou_nms(boxes, scores, classes, 0.3, beta=1.0).tolist() == [0]
    assert diou_nms(boxes, scores, torch.tensor([0, 1]), 0.3).tolist() == [0, 1]  # other class


@pytest.mark.parametrize("seed", range(3))
def test_greedy_and_agnostic_match_brute_force(seed):
    boxes, scores, classes = _random_boxes(seed + 10, 50)
    b, s, c = boxes.tolist(), scores.tolist(), classes.tolist()
    assert greedy_nms(boxes, scores, classes, 0.45).tolist() == _greedy_ref(b, s, c, 0.45, _iou)
    assert agnostic_nms(boxes, scores, classes, 0.45).tolist() == _greedy_ref(b, s, c, 0.45, _iou, agnostic=True)


def test_empty_inputs():
    e, s, c = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    for name in ("greedy", "agnostic", "diou"):
        assert get_nms(name)(e, s, c, 0.5).shape == (0,)
    out = postprocess(torch.zeros(2, 0, 4), torch.zeros(2, 0), torch.zeros(2, 0, 5))
    assert len(out) == 2 and out[0].boxes.shape == (0, 4)


def test_get_nms_rejects_unknown():
    with pytest.raises(ValueError, match="soft"):
        get_nms("soft")


def test_candidate_rules():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])
    obj = torch.tensor([0.9, 0.5])
    cls = torch.tensor([[0.5, 0.4, 0.1], [0.5, 0.6, 0.0]])
    # scores: [[0.45, 0.36, 0.09], [0.25, 0.30, 0.0]]
    best = select_best_class(boxes, obj, cls, 0.25)
    assert best.class_ids.tolist() == [0, 1]
    torch.testing.assert_close(best.scores, torch.tensor([0.45, 0.30]))
    every = select_all_classes(boxes, obj, cls, 0.25)
    assert every.class_ids.tolist() == [0, 1, 1]  # (box 0, cls 0), (box 0, cls 1), (box 1, cls 1); 0.25 is not > 0.25
    torch.testing.assert_close(every.scores, torch.tensor([0.45, 0.36, 0.30]))
    assert every.boxes[:2].tolist() == [boxes[0].tolist()] * 2
    assert set(CANDIDATES) == {"best", "all"}


def test_postprocess_cap_order_and_batch():
    g = torch.Generator().manual_seed(5)
    n = 40
    p = torch.rand(2, n, 2, generator=g) * 500
    boxes = torch.cat([p, p + 10], -1)  # small boxes spread out: few overlaps
    obj = torch.rand(2, n, generator=g)
    cls = torch.rand(2, n, 4, generator=g)
    full = postprocess(boxes, obj, cls, PostprocessConfig(conf=0.05, iou=0.45, max_det=1000))
    capped = postprocess(boxes, obj, cls, PostprocessConfig(conf=0.05, iou=0.45, max_det=5))
    for f, c in zip(full, capped):
        assert len(f.scores) > 5 and len(c.scores) == 5
        torch.testing.assert_close(c.scores, f.scores[:5])
        assert torch.all(f.scores[:-1] >= f.scores[1:])
        assert torch.all(f.scores > 0.05)
    # image 1's result does not depend on image 0
    alone = postprocess(boxes[1:], obj[1:], cls[1:], PostprocessConfig(conf=0.05, max_det=1000))[0]
    torch.testing.assert_close(alone.boxes, full[1].boxes)


def test_postprocess_pre_nms_cap_keeps_the_top_scores():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]]])
    obj = torch.tensor([[0.5, 0.9, 0.7]])
    cls = torch.ones(1, 3, 1)
    [r] = postprocess(boxes, obj, cls, PostprocessConfig(conf=0.1, max_nms=2))
    torch.testing.assert_close(r.scores, torch.tensor([0.9, 0.7]))


def _decoded_batch(seed: int, b: int = 5, n: int = 300, c: int = 4):
    """Random decoded heads: boxes Tensor[B, N, 4] xyxy in a 0..300 image, obj Tensor[B, N], cls Tensor[B, N, C];
    image 2 has no box above any threshold."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(b, n, 2, generator=g) * 250
    boxes = torch.cat([p, p + 4 + torch.rand(b, n, 2, generator=g) * 60], 2)
    obj = torch.rand(b, n, generator=g)
    obj[2] = 0.0
    return boxes, obj, torch.rand(b, n, c, generator=g)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("labels", ["best", "all"])
@pytest.mark.parametrize("nms", ["greedy", "agnostic", "diou"])
@pytest.mark.parametrize("max_boxes", [32768, 150, 1])
def test_batched_postprocess_equals_image_by_image(seed, labels, nms, max_boxes):
    """One NMS call for several images (max_boxes 150 and 1: several groups) keeps what
    `postprocess` keeps image by image, in the same order, with both caps binding."""
    boxes, obj, cls = _decoded_batch(seed)
    for config in (
        PostprocessConfig(conf=0.2, iou=0.45, nms=nms, labels=labels),
        PostprocessConfig(conf=0.05, iou=0.6, nms=nms, labels=labels, max_det=40, max_nms=120),
    ):
        copies = boxes.clone(), obj.clone(), cls.clone()
        ref = postprocess(boxes, obj, cls, config, beta=0.6)
        got = batched_postprocess(boxes, obj, cls, config, beta=0.6, max_boxes=max_boxes)
        assert len(got) == len(ref) == 5 and len(got[2].scores) == 0
        assert any(len(r.scores) == config.max_det for r in ref) or config.max_det == 300
        for g, r in zip(got, ref):
            torch.testing.assert_close(g.scores, r.scores, rtol=0, atol=0)
            torch.testing.assert_close(g.boxes, r.boxes, rtol=0, atol=0)
            assert g.class_ids.tolist() == r.class_ids.tolist()
        for before, after in zip(copies, (boxes, obj, cls)):
            assert torch.equal(before, after)


def test_batched_postprocess_keeps_groups_apart_when_coordinates_are_negative():
    """Two boxes of different classes that overlap only after torchvision's shift (which assumes
    coordinates >= 0) both survive class-aware NMS."""
    boxes = torch.tensor([[[90.0, 0, 100, 10], [-100, 0, -89, 10]]])  # class 0 at x 90..100, class 1 at x < 0
    obj = torch.tensor([[0.9, 0.8]])
    cls = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    [r] = batched_postprocess(boxes, obj, cls, PostprocessConfig(conf=0.1, iou=0.3))
    assert r.class_ids.tolist() == [0, 1]
    [empty] = batched_postprocess(boxes, obj * 0, cls, PostprocessConfig(conf=0.1))
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,)


@pytest.mark.gpu
def test_batched_postprocess_on_cuda_equals_cpu():
    boxes, obj, cls = _decoded_batch(0, b=8, n=2000)
    for labels in ("best", "all"):
        config = PostprocessConfig(conf=0.01, iou=0.6, labels=labels)
        cpu = postprocess(boxes, obj, cls, config)
        gpu = batched_postprocess(boxes.cuda(), obj.cuda(), cls.cuda(), config)
        for g, c in zip(gpu, cpu):
            assert g.boxes.device.type == "cuda"
            torch.testing.assert_close(g.boxes.cpu(), c.boxes)
            assert g.class_ids.cpu().tolist() == c.class_ids.tolist()


@pytest.mark.gpu
def test_nms_runs_on_cuda():
    boxes, scores, classes = _random_boxes(0, 60)
    for name in ("greedy", "agnostic", "diou"):
        cpu = get_nms(name)(boxes, scores, classes, 0.3)
        gpu = get_nms(name)(boxes.cuda(), scores.cuda(), classes.cuda(), 0.3)
        assert gpu.device.type == "cuda" and gpu.cpu().tolist() == cpu.tolist()


def test_settings_name_the_functions_that_exist():
    """nms_config (torch-free, read by the command line) lists exactly what nms.py implements."""
    from yolo4.ops.nms import LABEL_RULES, NMS_KINDS

    assert tuple(CANDIDATES) == LABEL_RULES
    for kind in NMS_KINDS:
        assert callable(get_nms(kind))
    with pytest.raises(ValueError, match="unknown NMS"):
        get_nms("soft")


def test_postprocess_presets_keep_darknet_defaults():
    """detect draws boxes as OpenCV's darknet sample; val scores mAP as darknet's `map`."""
    assert (DETECT_POSTPROCESS.conf, DETECT_POSTPROCESS.iou, DETECT_POSTPROCESS.labels) == (0.25, 0.45, "best")
    assert (VAL_POSTPROCESS.conf, VAL_POSTPROCESS.iou, VAL_POSTPROCESS.labels) == (0.001, 0.6, "all")
    assert DETECT_POSTPROCESS.nms == VAL_POSTPROCESS.nms == "greedy"
    assert DETECT_POSTPROCESS.max_det == VAL_POSTPROCESS.max_det == 300
    assert PostprocessConfig() == DETECT_POSTPROCESS
    changed = VAL_POSTPROCESS.replace(conf=0.01)
    assert changed.conf == 0.01 and changed.labels == "all" and VAL_POSTPROCESS.conf == 0.001
    assert VAL_POSTPROCESS.describe() == "conf 0.001, NMS greedy 0.6, labels all, max_det 300"
    with pytest.raises(AttributeError):
        DETECT_POSTPROCESS.conf = 0.5  # frozen: one object passed down, never edited on the way


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"conf": 1.0}, "conf 1.0 must be in"),
        ({"conf": -0.1}, "conf -0.1 must be in"),
        ({"iou": 0.0}, "iou 0.0 must be in"),
        ({"nms": "soft"}, "unknown NMS 'soft'"),
        ({"labels": "top"}, "unknown labels rule 'top'"),
        ({"max_det": 0}, "max_det 0"),
    ],
)
def test_postprocess_config_rejects_bad_values(changes, message):
    from yolo4.errors import Yolo4Error

    with pytest.raises(Yolo4Error, match=message):
        PostprocessConfig(**changes)
    with pytest.raises(Yolo4Error, match=message):
        DETECT_POSTPROCESS.replace(**changes)


def test_postprocess_follows_its_config():
    """Each field changes the result the way its name says (labels, nms kind, conf)."""
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]])
    obj = torch.tensor([[0.9, 0.8, 0.3]])
    cls = torch.tensor([[[0.9, 0.5], [0.1, 0.9], [0.9, 0.9]]])  # box 0 cls 0, box 1 cls 1 (overlapping)
    best = postprocess(boxes, obj, cls, DETECT_POSTPROCESS)[0]
    assert best.class_ids.tolist() == [0, 1, 0]  # class-aware: the two overlapping boxes differ in class
    agnostic = postprocess(boxes, obj, cls, DETECT_POSTPROCESS.replace(nms="agnostic"))[0]
    assert agnostic.class_ids.tolist() == [0, 0]  # box 1 suppressed by box 0 across classes
    every = postprocess(boxes, obj, cls, DETECT_POSTPROCESS.replace(labels="all"))[0]
    assert sorted(zip(every.boxes[:, 0].tolist(), every.class_ids.tolist())) == [(0, 0), (1, 1), (50, 0), (50, 1)]
    # box 2 carries both classes (0.27 each); box 0's class-1 copy (0.45) falls to box 1's 0.72
    strict = postprocess(boxes, obj, cls, DETECT_POSTPROCESS.replace(conf=0.5))[0]
    assert strict.scores.tolist() == pytest.approx([0.81, 0.72])
