"""COCO json: `images` (id, file_name, width, height), `annotations` (image_id,
category_id, bbox = [x, y, w, h] pixels, iscrowd), `categories` (id, name). Category ids
(sparse in COCO: 1..90) become contiguous class ids 0..K-1 in id order; crowd boxes are left
out (they are "ignore" regions, not objects)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from yolo4.data.formats.common import IndexBuilder, LabelIndex
from yolo4.errors import DataError


def load_coco_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read COCO json ({e})") from e
    except ValueError as e:
        raise DataError(f"{path}: not valid json ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path}: not a COCO detection file (no 'images' list)")
    if not isinstance(doc.get("categories"), list) or not doc["categories"]:
        raise DataError(f"{path}: not a COCO detection file (no 'categories' list)")
    return doc


def coco_image_dir(path: Path, doc: dict) -> Path:
    """The folder the json's `file_name`s are relative to: beside the json, an `images/`
    beside it or beside its folder, or the folder its name points at
    (`instances_val2017.json` -> `val2017/`), looked for
    beside the json, beside its folder and in their `images/`."""
    stem = path.stem
    named = stem.split("_", 1)[1] if "_" in stem else stem
    cands = [path.parent, path.parent / "images", path.parent.parent / "images", path.parent.parent]
    for base in (path.parent, path.parent.parent):
        cands += [base / named, base / "images" / named]
    first = next((im.get("file_name") for im in doc["images"] if im.get("file_name")), None)
    if first is not None:
        for c in cands:
            if (c / first).is_file():
                return c
    for c in cands[1:]:
        if c.is_dir():
            return c
    return path.parent


def read_coco(path: Path, image_dir: Path | None = None) -> tuple[LabelIndex, list[str], list[int]]:
    """Index a COCO json. Returns (index, class names, COCO category id of each class)."""
    doc = load_coco_json(path)
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    names = [str(c.get("name", c["id"])) for c in cats]
    to_class = {cid: k for k, cid in enumerate(cat_ids)}
    image_dir = coco_image_dir(path, doc) if image_dir is None else image_dir
    anns = defaultdict(list)
    for n, a in enumerate(doc.get("annotations", [])):
        anns[a.get("image_id")].append((n, a))
    b = IndexBuilder()
    for im in doc["images"]:
        fname = im.get("file_name")
        if not fname:
            b.skip(f"{path}: image id {im.get('id')} has no file_name")
            continue
        img = image_dir / fname
        if not img.is_file():
            b.skip(f"{img}: image file is missing (listed in {path.name})")
            continue
        try:
            hw = (int(im["height"]), int(im["width"]))
        except (KeyError, TypeError, ValueError):
            b.skip(f"{path}: image {fname} has no valid width/height")
            continue
        boxes, cls, where, problems = [], [], [], []
        for n, a in anns.get(im.get("id"), []):
            if a.get("iscrowd", 0):
                continue
            bbox = a.get("bbox")
            cid = a.get("category_id")
            if not isinstance(bbox, list) or len(bbox) != 4:
                problems.append(f"{path}: annotation #{n} of {fname}: bbox {bbox!r} is not [x, y, w, h]")
                continue
            if cid not in to_class:
                problems.append(f"{path}: annotation #{n} of {fname}: unknown category_id {cid}")
                continue
            x, y, w, h = (float(v) for v in bbox)
            boxes.append((x, y, x + w, y + h))
            cls.append(to_class[cid])
            where.append(f"{path}: annotation #{n} of {fname}")
        b.add_checked(img, hw, boxes, cls, len(names), where, problems, name=fname)
    return b.build(), names, cat_ids
