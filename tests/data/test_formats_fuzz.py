"""Fuzzing the three label readers (YOLO txt, Pascal VOC xml, COCO json) with hypothesis.

Whatever the file holds, a reader either raises the project's DataError or returns an index
whose every entry is usable: finite boxes of positive size inside their image, class ids in
range, and every skipped image named. The default suite runs a bounded number of examples;
`pytest -m slow` runs the same properties on many more.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolo4.data.formats.coco import read_coco
from yolo4.data.formats.common import LabelIndex
from yolo4.data.formats.voc import read_voc
from yolo4.data.formats.yolo import read_yolo
from yolo4.errors import DataError

H, W = 30, 40
NAMES = ["cat", "dog"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder() -> Path:
    """A folder with one 40x30 image, `images/a.jpg`, that the examples label."""
    d = Path(tempfile.mkdtemp(prefix="yolo4-fuzz-"))
    (d / "images").mkdir()
    (d / "labels").mkdir()
    (d / "annotations").mkdir()
    assert cv2.imwrite(str(d / "images" / "a.jpg"), np.full((H, W, 3), 90, np.uint8))
    return d


def assert_usable(idx: LabelIndex, num_classes: int) -> None:
    """What a reader promises about every entry it keeps."""
    assert len(idx.image_paths) == len(idx.image_hw) == len(idx.boxes) == len(idx.class_ids)
    assert len(idx.problems) >= idx.num_skipped
    for boxes, cls, (h, w) in zip(idx.boxes, idx.class_ids, idx.image_hw.tolist()):
        assert boxes.dtype == np.float32 and boxes.shape == (len(cls), 4) and cls.dtype == np.int64
        assert np.isfinite(boxes).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
        assert ((cls >= 0) & (cls < num_classes)).all()


# ---------------------------------------------------------------- YOLO txt
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(0, 1).map(lambda v: f"{v:.6f}"),
    st.sampled_from(["0", "1", "2", "nan", "inf", "-inf", "1e400", "-0", "0x10", "1_0", "", "٣", "1,5"]),
    st.text(max_size=6),
)
LINES = st.one_of(
    st.lists(NUMBERS, min_size=5, max_size=5),  # the shape of a box line, with odd values
    st.lists(NUMBERS, min_size=0, max_size=9),
).map(" ".join)
LABEL_TEXT = st.one_of(st.lists(LINES, max_size=6).map("\n".join), st.text(max_size=200), st.binary(max_size=80))


def _check_yolo(folder: Path, text: str | bytes) -> None:
    label = folder / "labels" / "a.txt"
    label.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        idx = read_yolo([folder / "images" / "a.jpg"], len(NAMES), progress=False)
    except DataError:
        return
    assert_usable(idx, len(NAMES))
    assert len(idx) + idx.num_skipped == 1


@FAST
@given(text=LABEL_TEXT)
def test_fuzzed_yolo_labels(folder, text):
    _check_yolo(folder, text)


@pytest.mark.slow
@LONG
@given(text=LABEL_TEXT)
def test_fuzzed_yolo_labels_long(folder, text):
    _check_yolo(folder, text)


# ---------------------------------------------------------------- Pascal VOC xml
VOC = (
    "<annotation><folder>x</folder><filename>a.jpg</filename><size><width>40</width><height>30</height>"
    "<depth>3</depth></size><object><name>cat</name><difficult>0</difficult><bndbox><xmin>3</xmin>"
    "<ymin>4</ymin><xmax>20</xmax><ymax>25</ymax></bndbox></object><object><name>dog</name><bndbox>"
    "<xmin>10</xmin><ymin>2</ymin><xmax>39</xmax><ymax>30</ymax></bndbox></object></annotation>"
)
TOKENS = st.one_of(NUMBERS, st.sampled_from(["<", ">", "</", "&", "&amp;", "<!--", "]]>", "a.jpg", "cat", "/etc"]))


@st.composite
def mutated_text(draw, base: str):
    """`base` with a few edits: an element's text replaced, a slice deleted, a token inserted,
    a slice duplicated."""
    text = base
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["value", "value", "delete", "insert", "replace", "duplicate"]))
        values = [m.span(1) for m in re.finditer(r">([^<]*)<", text)]
        if op == "value" and values:
            i, j = draw(st.sampled_from(values))
            text = text[:i] + draw(TOKENS) + text[j:]
            continue
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 30)))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(TOKENS) + text[i:]
        elif op == "replace":
            text = text[:i] + draw(TOKENS) + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


def _check_voc(folder: Path, text: str) -> None:
    xml = folder / "annotations" / "a.xml"
    xml.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        idx = read_voc([xml], folder / "images", NAMES)
    except DataError:
        return
    assert_usable(idx, len(NAMES))
    assert len(idx) + idx.num_skipped == 1


@FAST
@given(text=mutated_text(VOC))
def test_fuzzed_voc_xml(folder, text):
    _check_voc(folder, text)


@pytest.mark.slow
@LONG
@given(text=mutated_text(VOC))
def test_fuzzed_voc_xml_long(folder, text):
    _check_voc(folder, text)


# ---------------------------------------------------------------- COCO json
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["a.jpg", "../a.jpg", "/etc/passwd", "images/a.jpg"]),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}, {"id": 2, "file_name": "a.jpg"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [3, 4, 10, 12], "iscrowd": 0, "area": 120},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 2, 19, 27], "iscrowd": 0, "area": 500},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}


def _paths(doc, prefix=()):
    """Every (path of keys/indices) inside a JSON document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for k, v in enumerate(doc):
            yield from _paths(v, (*prefix, k))


ALL_PATHS = list(_paths(COCO))


@st.composite
def mutated_coco(draw):
    """The COCO document with a few of its values (anywhere, the root included) replaced by random JSON."""
    doc = json.loads(json.dumps(COCO))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        value = draw(JSON_VALUES)
        if not path:
            doc = value
            continue
        parent = doc
        try:
            for k in path[:-1]:
                parent = parent[k]
            parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit removed this path
            pass
    return doc


def _check_coco(folder: Path, doc) -> None:
    path = folder / "a.json"
    path.write_text(json.dumps(doc))  # (NaN and Infinity as JSON extensions: Python's reader takes them)
    try:
        idx, names, cat_ids = read_coco(path, image_dir=folder / "images")
    except DataError:
        return
    assert len(names) == len(cat_ids) and all(isinstance(c, int) for c in cat_ids)
    assert_usable(idx, len(names))


@FAST
@given(doc=mutated_coco())
def test_fuzzed_coco_json(folder, doc):
    _check_coco(folder, doc)


@pytest.mark.slow
@LONG
@given(doc=mutated_coco())
def test_fuzzed_coco_json_long(folder, doc):
    _check_coco(folder, doc)
