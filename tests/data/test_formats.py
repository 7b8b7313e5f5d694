"""Readers: YOLO txt (folder, YAML, darknet .data), COCO json, Pascal VOC xml; broken files
are listed by name and skipped; unusable sources raise DataError; the index is cached."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

import yolo4.data.dataset as dsmod
from yolo4.data.dataset import load_dataset
from yolo4.errors import DataError

H, W = 48, 64
BOXES = np.array([[4, 6, 20, 30], [30, 10, 60, 44]], np.float32)  # xyxy pixels
CLASSES = np.array([0, 1])


def _img(path: Path, value: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = np.full((H, W, 3), value, np.uint8)
    im[5:9, 5:9] = 255
    assert cv2.imwrite(str(path), im)
    return path


def _yolo_line(c, b, w=W, h=H) -> str:
    x1, y1, x2, y2 = b
    return f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"


def _yolo_label(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _good_labels() -> list[str]:
    return [_yolo_line(c, b) for c, b in zip(CLASSES, BOXES)]


def _yolo_folder(root: Path, n: int = 6, split: bool = True) -> Path:
    for k in range(n):
        sub = ("val" if k % 3 == 0 else "train") if split else ""
        _img(root / "images" / sub / f"im{k}.jpg", 40 + k)
        _yolo_label(root / "labels" / sub / f"im{k}.txt", _good_labels())
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


# ---------------------------------------------------------------- YOLO
def test_yolo_folder_with_splits(tmp_path):
    root = _yolo_folder(tmp_path / "d")
    tr, va = load_dataset(root, "train"), load_dataset(root, "val")
    assert (len(tr), len(va)) == (4, 2)
    assert tr.names == ["cat", "dog"] and not tr.problems
    img, boxes, cls = tr.load(0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    np.testing.assert_allclose(boxes, BOXES, atol=1e-4)
    np.testing.assert_array_equal(cls, CLASSES)
    assert cls.dtype == np.int64 and boxes.dtype == np.float32
    assert len(load_dataset(root, "all")) == 6


def test_yolo_rgb_order(tmp_path):
    p = tmp_path / "d" / "images" / "a.png"
    p.parent.mkdir(parents=True)
    im = np.zeros((H, W, 3), np.uint8)
    im[..., 2] = 200  # red in OpenCV's BGR
    cv2.imwrite(str(p), im)
    _yolo_label(tmp_path / "d" / "labels" / "a.txt", _good_labels())
    img, _, _ = load_dataset(tmp_path / "d", "all").load(0)
    assert img[0, 0].tolist() == [200, 0, 0]


def test_yaml_source_relative_path_and_dict_names(tmp_path):
    root = _yolo_folder(tmp_path / "d")
    y = tmp_path / "my.yaml"
    y.write_text("path: d\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    ds = load_dataset(y, "val")
    assert len(ds) == 2 and ds.names == ["cat", "dog"]
    assert all(Path(p).is_relative_to(root) for p in ds.image_paths)


def test_yaml_with_absolute_path_from_another_machine_falls_back_to_its_folder(tmp_path):
    _yolo_folder(tmp_path / "d")
    (tmp_path / "d" / "data.yaml").write_text(
        "path: /nonexistent/elsewhere\ntrain: images/train\nval: images/val\nnames: [cat, dog]\n"
    )
    assert len(load_dataset(tmp_path / "d", "train")) == 4  # the folder's data.yaml is picked up


def test_folder_with_an_unrelated_yaml_is_still_detected(tmp_path):
    root = _yolo_folder(tmp_path / "d")
    (root / "hyp.yaml").write_text("lr0: 0.01\nmomentum: 0.9\n")
    assert len(load_dataset(root, "train")) == 4


def test_darknet_data_file_and_image_lists(tmp_path):
    root = _yolo_folder(tmp_path / "obj", split=False)
    imgs = sorted((root / "images").glob("*.jpg"))
    (tmp_path / "train.txt").write_text("".join(f"obj/images/{p.name}\n" for p in imgs[:4]))
    (tmp_path / "valid.txt").write_text("".join(f"{p}\n" for p in imgs[4:]))  # absolute paths
    (tmp_path / "obj.names").write_text("cat\ndog\n")
    (tmp_path / "obj.data").write_text(
        "classes = 2\ntrain = train.txt\nvalid = valid.txt\nnames = obj.names\nbackup = backup/\n"
    )
    tr, va = load_dataset(tmp_path / "obj.data", "train"), load_dataset(tmp_path / "obj.data", "val")
    assert (len(tr), len(va)) == (4, 2) and tr.names == ["cat", "dog"]
    (tmp_path / "bad.data").write_text("classes = 3\ntrain = train.txt\nnames = obj.names\n")
    with pytest.raises(DataError, match="classes=3"):
        load_dataset(tmp_path / "bad.data")


def test_broken_yolo_labels_are_listed_by_file_and_skipped(tmp_path, caplog):
    root = _yolo_folder(tmp_path / "d", n=3, split=False)
    bad = {
        "cls.txt": [_yolo_line(7, BOXES[0])],  # class out of range
        "outside.txt": ["0 0.9 0.5 0.5 0.5"],  # x2 = 1.15 * W
        "degenerate.txt": ["0 0.5 0.5 0.0 0.2"],
        "syntax.txt": ["0 0.5 0.5 0.2"],
        "nan.txt": ["0 0.5 abc 0.2 0.2"],
    }
    for name, lines in bad.items():
        _img(root / "images" / name.replace(".txt", ".jpg"))
        _yolo_label(root / "labels" / name, lines)
    _img(root / "images" / "background.jpg")  # no label file: a background image, not a problem
    (root / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    _img(root / "images" / "unreadable.jpg")
    (root / "labels" / "unreadable.txt").write_bytes(b"\xff\xfe\xfa\x00 binary")
    _img(root / "images" / "tolerated.jpg")  # overshoot within 1 %: clipped silently
    _yolo_label(root / "labels" / "tolerated.txt", ["1 0.5 0.5 1.005 0.5"])
    with caplog.at_level(logging.WARNING, logger="yolo4.data"):
        ds = load_dataset(root, "all")
    names = sorted(Path(p).name for p in ds.image_paths)
    assert names == ["background.jpg", "im0.jpg", "im1.jpg", "im2.jpg", "tolerated.jpg"]
    assert ds.num_skipped == 7 and len(ds.problems) == 7
    text = "\n".join(ds.problems)
    for needle in [
        "cls.txt:1: class id 7 out of range [0, 2)",
        "outside.txt:1:",
        "outside the 64x48 image",
        "degenerate.txt:1: degenerate box",
        "syntax.txt:1: expected 5 values",
        "nan.txt:1: not a number",
        "corrupt.jpg: not an image",
        "unreadable.txt: unreadable label file",
    ]:
        assert needle in text, needle
    assert "7 image(s) skipped" in caplog.text  # never silently
    b, c = ds.labels(names.index("tolerated.jpg"))
    assert b[0, 2] == W and b[0, 0] >= 0


def test_segmentation_lines_become_the_polygon_box(tmp_path):
    root = tmp_path / "d"
    _img(root / "images" / "a.jpg")
    x1, y1, x2, y2 = BOXES[1] / np.array([W, H, W, H])
    _yolo_label(
        root / "labels" / "a.txt", [f"1 {x1} {y1} {x2} {(y1 + y2) / 2} {(x1 + x2) / 2} {y2}", _yolo_line(0, BOXES[0])]
    )
    (root / "classes.txt").write_text("cat\ndog\n")
    ds = load_dataset(root, "all")
    b, c = ds.labels(0)
    np.testing.assert_allclose(b, BOXES[::-1], atol=1e-4)
    assert c.tolist() == [1, 0] and not ds.problems


def test_missing_image_in_a_list_is_a_problem(tmp_path):
    _yolo_folder(tmp_path / "d", split=False)
    (tmp_path / "d" / "list.txt").write_text("images/im0.jpg\nimages/ghost.jpg\n")
    (tmp_path / "d" / "data.yaml").write_text("train: list.txt\nval: list.txt\nnames: [cat, dog]\n")
    ds = load_dataset(tmp_path / "d", "train")
    assert len(ds) == 1 and "ghost.jpg: image file is missing" in ds.problems[0]


def test_image_that_breaks_after_indexing_raises_dataerror_naming_it(tmp_path):
    root = _yolo_folder(tmp_path / "d", split=False)
    ds = load_dataset(root, "all")
    Path(ds.image_paths[0]).write_bytes(b"garbage")
    with pytest.raises(DataError, match=Path(ds.image_paths[0]).name):
        ds.load(0)


# ---------------------------------------------------------------- unusable sources
def test_unusable_sources_raise_dataerror_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown dataset layout"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "e2" / "images").mkdir(parents=True)
    (tmp_path / "e2" / "labels").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path / "e2")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="x.csv"):
        load_dataset(tmp_path / "x.csv")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(DataError, match="bad.yaml"):
        load_dataset(tmp_path / "bad.yaml")
    (tmp_path / "nonames.yaml").write_text("train: images\n")
    with pytest.raises(DataError, match="names"):
        load_dataset(tmp_path / "nonames.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_dataset(tmp_path / "bad.json")
    _yolo_folder(tmp_path / "ok")
    with pytest.raises(DataError, match="split"):
        load_dataset(tmp_path / "ok", "test")


def test_all_images_broken_raises(tmp_path):
    root = tmp_path / "d"
    _img(root / "images" / "a.jpg")
    _yolo_label(root / "labels" / "a.txt", ["5 0.5 0.5 0.1 0.1"])
    (root / "classes.txt").write_text("only\n")
    with pytest.raises(DataError, match="no usable images"):
        load_dataset(root, "all")


# ---------------------------------------------------------------- COCO
def _coco(tmp_path: Path, layout: str) -> Path:
    images_dir = {"beside": tmp_path, "images": tmp_path / "images", "named": tmp_path / "val2017"}[layout]
    ims, anns = [], []
    for k in range(4):
        _img(images_dir / f"{k:03d}.jpg")
        ims.append({"id": 100 + k, "file_name": f"{k:03d}.jpg", "width": W, "height": H})
        for c, b in zip([3, 17], BOXES):  # sparse COCO category ids
            x1, y1, x2, y2 = b.tolist()
            anns.append(
                {
                    "id": len(anns),
                    "image_id": 100 + k,
                    "category_id": c,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                    "area": (x2 - x1) * (y2 - y1),
                }
            )
    anns.append({"id": 99, "image_id": 100, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1})
    doc = {"images": ims, "annotations": anns, "categories": [{"id": 17, "name": "dog"}, {"id": 3, "name": "cat"}]}
    p = tmp_path / "instances_val2017.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("layout", ["beside", "images", "named"])
def test_coco_json(tmp_path, layout):
    p = _coco(tmp_path, layout)
    ds = load_dataset(p, "all")
    assert len(ds) == 4 and ds.names == ["cat", "dog"] and ds.category_ids == [3, 17]
    _, boxes, cls = ds.load(0)
    np.testing.assert_allclose(boxes, BOXES)  # crowd box left out
    np.testing.assert_array_equal(cls, [0, 1])
    tr, va = load_dataset(p, "train"), load_dataset(p, "val")
    assert (len(tr), len(va)) == (3, 1)
    assert set(tr.image_paths).isdisjoint(va.image_paths)


def test_broken_coco_entries(tmp_path):
    p = _coco(tmp_path, "beside")
    doc = json.loads(p.read_text())
    doc["images"].append({"id": 7, "file_name": "ghost.jpg", "width": W, "height": H})
    doc["annotations"] += [
        {"id": 1000, "image_id": 101, "category_id": 99, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        {"id": 1001, "image_id": 102, "category_id": 3, "bbox": [50, 1, 40, 5], "iscrowd": 0},
        {"id": 1002, "image_id": 103, "category_id": 3, "bbox": [5, 5, 0, 5], "iscrowd": 0},
    ]
    p.write_text(json.dumps(doc))
    ds = load_dataset(p, "all")
    assert len(ds) == 1 and ds.num_skipped == 4
    text = "\n".join(ds.problems)
    assert "ghost.jpg: image file is missing" in text and "unknown category_id 99" in text
    assert "outside the 64x48 image" in text and "degenerate box" in text


def test_coco_folder_with_train_and_val_jsons(tmp_path):
    p = _coco(tmp_path, "images")
    doc = json.loads(p.read_text())
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    doc["images"] = doc["images"][:1]
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    p.unlink()
    assert len(load_dataset(tmp_path, "train")) == 4 and len(load_dataset(tmp_path, "val")) == 1


# ---------------------------------------------------------------- VOC
def _voc_xml(path: Path, fname: str, objects: list[tuple[str, list]], size=(W, H)) -> None:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{fname}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def _voc_objects():
    # VOC is 1-based inclusive: pixel edges (x1, y1, x2, y2) are written as (x1 + 1, y1 + 1, x2, y2)
    return [(n, [int(b[0]) + 1, int(b[1]) + 1, int(b[2]), int(b[3])]) for n, b in zip(["cat", "dog"], BOXES)]


@pytest.mark.parametrize("layout", [("images", "annotations"), ("JPEGImages", "Annotations")])
def test_voc_folder(tmp_path, layout):
    imgs, anns = layout
    for k in range(5):
        _img(tmp_path / imgs / f"{k}.jpg")
        _voc_xml(tmp_path / anns / f"{k}.xml", f"{k}.jpg", _voc_objects())
    ds = load_dataset(tmp_path, "all")
    assert len(ds) == 5 and ds.names == ["cat", "dog"]
    _, boxes, cls = ds.load(0)
    np.testing.assert_allclose(boxes, BOXES)
    np.testing.assert_array_equal(cls, CLASSES)


def test_voc_imagesets_split_and_broken_files(tmp_path):
    for k in range(4):
        _img(tmp_path / "JPEGImages" / f"{k}.jpg")
        _voc_xml(tmp_path / "Annotations" / f"{k}.xml", f"{k}.jpg", _voc_objects())
    (tmp_path / "Annotations" / "4.xml").write_text("<annotation><filename>4.jpg</filename")  # truncated
    _voc_xml(tmp_path / "Annotations" / "5.xml", "missing.jpg", _voc_objects())
    _img(tmp_path / "JPEGImages" / "6.jpg")
    _voc_xml(tmp_path / "Annotations" / "6.xml", "6.jpg", [("cat", [1, 1, 500, 20])])
    _img(tmp_path / "JPEGImages" / "7.jpg")
    _voc_xml(tmp_path / "Annotations" / "7.xml", "7.jpg", [("cat", [1, 1, "x", 20])])
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    sets = tmp_path / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("0\n1\n2\n4\n5\n6\n7\n")
    (sets / "val.txt").write_text("3\n")
    tr = load_dataset(tmp_path, "train")
    assert len(tr) == 3 and len(load_dataset(tmp_path, "val")) == 1
    assert tr.split_origin == "ImageSets/Main/train.txt / val.txt"
    text = "\n".join(tr.problems)
    assert "4.xml: unreadable VOC xml" in text and "5.xml: its image 'missing.jpg' is missing" in text
    assert "6.xml: object #0 (cat)" in text and "outside" in text and "7.xml" in text


def test_kangaroo_uses_its_imagesets_split(kangaroo):
    tr, va = load_dataset(kangaroo, "train", progress=False), load_dataset(kangaroo, "val", progress=False)
    assert (len(tr), len(va)) == (132, 32) and tr.names == ["kangaroo"]
    assert set(tr.image_paths).isdisjoint(va.image_paths)
    ids = (kangaroo / "ImageSets" / "Main" / "val.txt").read_text().split()
    assert [p.stem for p in va.image_paths] == ids and va.split_origin == "ImageSets/Main/train.txt / val.txt"


# ---------------------------------------------------------------- split and cache
def test_auto_split_is_deterministic_written_down_and_seeded(tmp_path):
    root = _yolo_folder(tmp_path / "d", n=30, split=False)
    a = load_dataset(root, "val")
    assert len(a) == 3 and len(load_dataset(root, "train")) == 27
    assert not (root / "autosplit_val.txt").exists()  # only training writes the split down
    assert [str(p) for p in a.image_paths] == [str(p) for p in load_dataset(root, "val", write_split=True).image_paths]
    listed = (root / "autosplit_val.txt").read_text().split()
    assert listed == [str(p) for p in a.image_paths]
    assert len((root / "autosplit_train.txt").read_text().split()) == 27
    b = load_dataset(root, "val", seed=1, write_split=True)
    assert set(map(str, b.image_paths)) != set(map(str, a.image_paths))
    tr = load_dataset(root, "train")
    assert set(tr.image_paths).isdisjoint(b.image_paths)
    # readers after training take the written list, whatever their seed
    assert set(load_dataset(root, "val", seed=5).image_paths) == set(b.image_paths)
    assert "training wrote" in load_dataset(root, "val").split_origin


def test_label_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    root = _yolo_folder(tmp_path / "d", split=False)
    first = load_dataset(root, "all")
    assert list((root / ".yolo4-cache").glob("*.npz"))
    calls = []
    monkeypatch.setattr(dsmod, "read_yolo", lambda *a, **k: calls.append(1) or pytest.fail("cache not used"))
    second = load_dataset(root, "all")
    assert not calls and second.names == first.names
    for i in range(len(first)):
        np.testing.assert_array_equal(first.labels(i)[0], second.labels(i)[0])
    monkeypatch.undo()
    _yolo_label(root / "labels" / "im0.txt", [_yolo_line(1, BOXES[1])])  # edited: the cache is stale
    third = load_dataset(root, "all")
    assert [len(third.labels(i)[1]) for i in range(len(third))].count(1) == 1


def test_cache_and_split_fall_back_to_the_cache_dir_when_the_data_are_read_only(tmp_path, monkeypatch):
    root = _yolo_folder(tmp_path / "d", split=False)
    real = dsmod._can_write
    monkeypatch.setattr(dsmod, "_can_write", lambda d: not Path(d).is_relative_to(root) and real(d))
    ds = load_dataset(root, "val", write_split=True)
    assert len(ds) == 1
    assert not list(root.rglob("autosplit_*")) and not (root / ".yolo4-cache").exists()
    cache = tmp_path / "yolo4-cache"  # $YOLO4_CACHE_DIR, set by conftest
    listed = next(cache.rglob("autosplit_val.txt")).read_text().split()
    assert listed == [str(p) for p in ds.image_paths]
    assert list(cache.rglob("*.npz"))
    again = load_dataset(root, "val")  # reads the written split back from there
    assert again.image_paths == ds.image_paths and "training wrote" in again.split_origin


def test_images_cached_in_memory_are_what_the_files_hold(shapes_small):
    ds = load_dataset(shapes_small, "train", progress=False)
    first = [ds.load(i)[0] for i in range(3)]
    assert ds.cache_images()
    for p in ds.image_paths[:3]:
        Path(p).rename(Path(p).with_suffix(".gone"))  # the cache no longer needs the files
    try:
        for i in range(3):
            img, boxes, _ = ds.load(i)
            assert np.array_equal(img, first[i]) and len(boxes) == len(ds.labels(i)[0])
            img[:] = 0  # a caller may write into what it got; the cache keeps its copy
            assert np.array_equal(ds.load(i)[0], first[i])
        assert np.array_equal(ds.subset([2]).load(0)[0], first[2])
    finally:
        for p in ds.image_paths[:3]:
            Path(p).with_suffix(".gone").rename(p)


def test_image_cache_refuses_what_does_not_fit(shapes_small):
    ds = load_dataset(shapes_small, "train", progress=False)
    assert ds.cache_bytes() == int(ds.image_hw.prod(1).sum()) * 3
    assert not ds.cache_images(max_bytes=ds.cache_bytes() - 1)
    assert all(img is None for img in ds._images)


# ---------------------------------------------------------------- hostile and damaged sources
def test_list_entries_that_leave_the_dataset_are_named_not_followed(tmp_path):
    """`../../etc/passwd` in a darknet list: named with its line and skipped; absolute paths
    are taken as written (darknet's lists often are)."""
    root = _yolo_folder(tmp_path / "d", split=False)
    outside = _img(tmp_path / "elsewhere" / "far.jpg")
    (root / "train.txt").write_text(f"images/im0.jpg\n../../../../../../etc/passwd\n{outside}\nimages/im1.jpg\n")
    (root / "data.yaml").write_text("train: train.txt\nval: train.txt\nnames: [cat, dog]\n")
    ds = load_dataset(root, "train", cache=False)
    assert sorted(p.name for p in ds.image_paths) == ["far.jpg", "im0.jpg", "im1.jpg"]
    assert ds.num_skipped == 1
    assert any("train.txt:2: ../../../../../../etc/passwd leads outside the dataset folder" in p for p in ds.problems)


def test_voc_and_coco_file_names_that_leave_their_folder_are_named(tmp_path):
    voc = tmp_path / "voc"
    for k in range(3):
        _img(voc / "images" / f"{k}.jpg")
    _voc_xml(voc / "annotations" / "0.xml", "0.jpg", _voc_objects())
    _voc_xml(voc / "annotations" / "1.xml", "../../../etc/passwd", _voc_objects())
    _voc_xml(voc / "annotations" / "2.xml", "/etc/passwd", _voc_objects())
    (voc / "classes.txt").write_text("cat\ndog\n")
    ds = load_dataset(voc, "all", cache=False)
    assert [p.name for p in ds.image_paths] == ["0.jpg"] and ds.num_skipped == 2
    text = "\n".join(ds.problems)
    assert "1.xml: <filename> '../../../etc/passwd' leads outside" in text
    assert "2.xml: <filename> '/etc/passwd' leads outside" in text
    sets = voc / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("0\n../../../../etc/hostname\n")
    (sets / "val.txt").write_text("0\n")
    tr = load_dataset(voc, "train", cache=False)
    assert len(tr) == 1 and any("../../../../etc/hostname leads outside" in p for p in tr.problems)

    p = _coco(tmp_path / "coco", "beside")
    doc = json.loads(p.read_text())
    doc["images"][1]["file_name"] = "../../../../../etc/passwd"
    doc["images"][2]["file_name"] = "/etc/passwd"
    p.write_text(json.dumps(doc))
    ds = load_dataset(p, "all", cache=False)
    assert len(ds) == 2 and sum("leads outside" in q for q in ds.problems) == 2


def test_coco_files_of_the_wrong_shape_are_named(tmp_path):
    p = _coco(tmp_path, "beside")
    doc = json.loads(p.read_text())
    doc["images"] += [
        "not an object",
        {"id": [1], "file_name": 7},
        {"id": 500, "file_name": "000.jpg", "width": float("inf"), "height": 48},
        {"id": 501, "file_name": "001.jpg", "width": True, "height": 48},
    ]
    doc["annotations"] += [
        ["not", "an", "object"],
        {"image_id": {"a": 1}, "bbox": [1, 1, 2, 2]},
        {"image_id": 101, "category_id": [3], "bbox": [1, 1, 5, 5]},
        {"image_id": 102, "category_id": 3, "bbox": ["1", 1, 5, 5]},
        {"image_id": 103, "category_id": 3, "bbox": [1, 1, 5, float("nan")]},
    ]
    p.write_text(json.dumps(doc))
    ds = load_dataset(p, "all", cache=False)
    assert [q.name for q in ds.image_paths] == ["000.jpg"]
    text = "\n".join(ds.problems)
    for needle in [
        "images[4] is not an object",
        "has no file_name",
        "000.jpg has no valid width/height",
        "001.jpg has no valid width/height",
        "annotation #9 has no image_id",
        "annotation #10 has no image_id",
        "unknown category_id [3]",
        "bbox ['1', 1, 5, 5] is not [x, y, w, h]",
        "box has a non-finite coordinate",
    ]:
        assert needle in text, needle
    for categories, message in [
        ([{"name": "x"}], r"categories\[0\] has no integer 'id'"),
        ([{"id": 1}, {"id": 1}], "category id 1 appears twice"),
        ([{"id": "1"}], r"categories\[0\] has no integer 'id'"),
    ]:
        p.write_text(json.dumps({**doc, "categories": categories}))
        with pytest.raises(DataError, match=message):
            load_dataset(p, "all", cache=False)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="not valid json"):
        load_dataset(p, "all", cache=False)


def test_yolo_label_numbers_that_are_not_class_ids(tmp_path):
    root = _yolo_folder(tmp_path / "d", n=1, split=False)
    for name, line in {
        "inf": "inf 0.5 0.5 0.1 0.1",
        "nan": "nan 0.5 0.5 0.1 0.1",
        "huge": "1e300 0.5 0.5 0.1 0.1",
        "neg": "-1 0.5 0.5 0.1 0.1",
        "coords": "0 1e400 0.5 0.1 0.1",
    }.items():
        _img(root / "images" / f"{name}.jpg")
        _yolo_label(root / "labels" / f"{name}.txt", [line])
    ds = load_dataset(root, "all", cache=False)
    assert [p.name for p in ds.image_paths] == ["im0.jpg"] and ds.num_skipped == 5
    text = "\n".join(ds.problems)
    assert "inf.txt:1: class id 'inf' is not an integer" in text and "nan.txt:1: class id 'nan'" in text
    assert "huge.txt:1: class id '1e300' is out of range" in text and "neg.txt:1: class id '-1' is out of range" in text
    assert "coords.txt:1: box has a non-finite coordinate" in text


def test_voc_sizes_and_xml_bombs_are_named(tmp_path):
    _img(tmp_path / "images" / "a.jpg")
    _voc_xml(tmp_path / "annotations" / "a.xml", "a.jpg", _voc_objects(), size=("inf", "nan"))
    _img(tmp_path / "images" / "b.jpg")
    (tmp_path / "annotations" / "b.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{k} "{("&lol" + str(k - 1) + ";") * 10 if k else "&lol;" * 10}">' for k in range(10))
        + "]><annotation><filename>b.jpg</filename><object><name>&lol9;</name></object></annotation>"
    )
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    ds = load_dataset(tmp_path, "all", cache=False)
    assert [p.name for p in ds.image_paths] == ["a.jpg"]  # a bad <size>: the image header is read instead
    assert ds.image_hw.tolist() == [[H, W]]
    assert "b.xml: unreadable VOC xml" in ds.problems[0]  # expat refuses the entity expansion


def test_dataset_yaml_and_names_files_that_are_not_what_they_claim(tmp_path):
    _yolo_folder(tmp_path / "d")
    cases = {
        "binary.yaml": b"\xff\xfe\x00binary",
        "notrain.yaml": b"val: images/val\nnames: [a]\n",
        "nested.yaml": b"train: images/train\nnames: [a, [b, c]]\n",
        "anchors.yaml": b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\ntrain: images/train\nnames: [*b]\n",
        "trainmap.yaml": b"train: {a: 1}\nnames: [a, b]\n",
        "tabs.yaml": b"train:\timages/train\n\tnames: [a]\n",
    }
    for name, text in cases.items():
        (tmp_path / "d" / name).write_bytes(text)
    for name, message in {
        "binary.yaml": "is not UTF-8 text",
        "notrain.yaml": "needs at least `train`",
        "nested.yaml": "names: class 1 is a list, not a name",
        "anchors.yaml": "names: class 0 is a list, not a name",
        "trainmap.yaml": r"train: \{.a.: 1\} is not a path",
        "tabs.yaml": "not valid YAML",
    }.items():
        with pytest.raises(DataError, match=message):
            load_dataset(tmp_path / "d" / name)
    from yolo4.data.names import read_names

    (tmp_path / "w.names").write_bytes(np.arange(256, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"w.names: not a text file of class names \(byte 128"):
        read_names(tmp_path / "w.names")
    (tmp_path / "nul.names").write_bytes(b"cat\x00dog\n")
    with pytest.raises(DataError, match="nul.names: not a text file"):
        read_names(tmp_path / "nul.names")
    (tmp_path / "blank.names").write_text("\n \n")
    with pytest.raises(DataError, match="blank.names: no class names"):
        read_names(tmp_path / "blank.names")
    with pytest.raises(DataError, match="is a folder"):
        read_names(tmp_path / "d")


def test_files_a_dataset_does_not_use_are_named(tmp_path):
    root = _yolo_folder(tmp_path / "d")
    _yolo_label(root / "labels" / "train" / "orphan.txt", _good_labels())
    _yolo_label(root / "labels" / "train" / "classes.txt", ["cat", "dog"])  # labelImg writes this: not a label
    tr = load_dataset(root, "train", cache=False)
    assert len(tr) == 4 and tr.num_skipped == 0
    assert [p for p in tr.problems if "orphan" in p] == [
        f"{root}/labels/train/orphan.txt: label file without an image; not used"
    ]
    assert not any("classes.txt" in p for p in tr.problems)
    voc = tmp_path / "voc"
    for k in range(3):
        _img(voc / "images" / f"{k}.jpg")
    for k in range(2):
        _voc_xml(voc / "annotations" / f"{k}.xml", f"{k}.jpg", _voc_objects())
    ds = load_dataset(voc, "all", cache=False)
    assert len(ds) == 2 and ds.problems == [
        f"{voc}/images/2.jpg: image without an annotation xml; not used "
        "(an image without objects needs an xml without <object>)"
    ]
