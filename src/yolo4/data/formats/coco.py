"""COCO json: `images` (id, file_name, width, height), `annotations` (image_id,
category_id, bbox = [x, y, w, h] pixels, iscrowd), `categories` (id, name). Category ids
(sparse in COCO: 1..90) become contiguous class ids 0..K-1 in id order; crowd boxes are left
out (they are "ignore" regions, not objects)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import TypeGuard

from yolo4.data.formats.common import IndexBuilder, LabelIndex, join_inside
from yolo4.errors import DataError


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_coco_json(path: Path) -> dict:
    """The parsed file, with its `images` and `categories` lists checked.

    Raises:
        DataError naming the file: unreadable, not json, not a COCO detection file, or a category
        without a unique integer id.
    """
    try:
        doc = json.loads(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: cannot read COCO json ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # (UnicodeDecodeError is a ValueError)
        raise DataError(f"{path}: not valid json ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"{path}: not a COCO detection file (no 'images' list)")
    if not isinstance(doc.get("categories"), list) or not doc["categories"]:
        raise DataError(f"{path}: not a COCO detection file (no 'categories' list)")
    if not isinstance(doc.get("annotations", []), list):
        raise DataError(f"{path}: 'annotations' is not a list")
    seen = set()
    for k, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise DataError(f"{path}: categories[{k}] has no integer 'id'")
        if c["id"] in seen:
            raise DataError(f"{path}: category id {c['id']} appears twice")
        seen.add(c["id"])
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
    first = next(
        (im["file_name"] for im in doc["images"] if isinstance(im, dict) and isinstance(im.get("file_name"), str)),
        None,
    )
    if first:
        for c in cands:
            p = join_inside(c, first)
            if p is not None and p.is_file():
                return c
    for c in cands[1:]:
        if c.is_dir():
            return c
    return path.parent


def _image_hw(im: dict) -> tuple[int, int] | None:
    h, w = im.get("height"), im.get("width")
    if not (_is_number(h) and _is_number(w) and math.isfinite(h) and math.isfinite(w)):
        return None
    if not (0 < h < 2**31 and 0 < w < 2**31) or h != int(h) or w != int(w):
        return None
    return int(h), int(w)


def read_coco(path: Path, image_dir: Path | None = None) -> tuple[LabelIndex, list[str], list[int]]:
    """Index a COCO json. Returns (index, class names, COCO category id of each class).

    An image entry or annotation that is not what COCO defines (a file_name outside the image
    folder, a bbox that is not four numbers, an unknown category) is listed by its position in
    the file; an image with such an annotation is skipped.
    """
    doc = load_coco_json(path)
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    names = [str(c.get("name", c["id"])) for c in cats]
    to_class = {cid: k for k, cid in enumerate(cat_ids)}
    image_dir = coco_image_dir(path, doc) if image_dir is None else image_dir
    b = IndexBuilder()
    anns = defaultdict(list)
    for n, a in enumerate(doc.get("annotations", [])):
        if not isinstance(a, dict) or not isinstance(a.get("image_id"), (int, str)):
            b.note(f"{path}: annotation #{n} has no image_id; ignored")
            continue
        anns[a["image_id"]].append((n, a))
    for k, im in enumerate(doc["images"]):
        if not isinstance(im, dict):
            b.skip(f"{path}: images[{k}] is not an object")
            continue
        fname = im.get("file_name")
        if not isinstance(fname, str) or not fname:
            b.skip(f"{path}: image id {im.get('id')!r} has no file_name")
            continue
        img = join_inside(image_dir, fname)
        if img is None:
            b.skip(f"{path}: image {fname!r} leads outside {image_dir}; not followed")
            continue
        if not img.is_file():
            b.skip(f"{img}: image file is missing (listed in {path.name})")
            continue
        hw = _image_hw(im)
        if hw is None:
            b.skip(f"{path}: image {fname} has no valid width/height")
            continue
        image_id = im.get("id")
        boxes, cls, where, problems = [], [], [], []
        for n, a in anns.get(image_id, []) if isinstance(image_id, (int, str)) else []:
            if a.get("iscrowd", 0):
                continue
            bbox = a.get("bbox")
            cid = a.get("category_id")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
                problems.append(f"{path}: annotation #{n} of {fname}: bbox {bbox!r} is not [x, y, w, h]")
                continue
            if not _is_int(cid) or cid not in to_class:
                problems.append(f"{path}: annotation #{n} of {fname}: unknown category_id {cid!r}")
                continue
            x, y, w, h = (float(v) for v in bbox)
            boxes.append((x, y, x + w, y + h))
            cls.append(to_class[cid])
            where.append(f"{path}: annotation #{n} of {fname}")
        b.add_checked(img, hw, boxes, cls, len(names), where, problems, name=fname)
    return b.build(), names, cat_ids
