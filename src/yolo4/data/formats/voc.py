"""Pascal VOC xml: one `<annotation>` per image with `filename`, `size/width,height` and
`object/name, bndbox/xmin,ymin,xmax,ymax`. VOC pixel coordinates are 1-based and inclusive,
so a box becomes xyxy pixel edges `(xmin - 1, ymin - 1, xmax, ymax)`. Objects marked
`difficult` are kept as ordinary objects (darknet's voc_label.py drops them; an evaluator
that wants VOC's "ignore difficult" rule must read the xml itself)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from yolo4.data.formats.common import IMAGE_SUFFIXES, IndexBuilder, LabelIndex, image_hw


def _parse(xml: Path) -> ET.Element | str:
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as e:
        return f"{xml}: unreadable VOC xml ({type(e).__name__}: {e})"
    if root.tag != "annotation":
        return f"{xml}: root element is <{root.tag}>, not <annotation>"
    return root


def voc_names(xmls: list[Path]) -> list[str]:
    """The sorted set of object names in `xmls` (unparseable files are ignored here)."""
    names = set()
    for x in xmls:
        root = _parse(x)
        if not isinstance(root, str):
            names.update((o.findtext("name") or "").strip() for o in root.iter("object"))
    names.discard("")
    return sorted(names)


def _find_image(xml: Path, root: ET.Element, image_dir: Path) -> Path | None:
    fname = (root.findtext("filename") or "").strip()
    if fname and (image_dir / fname).is_file():
        return image_dir / fname
    for suf in sorted(IMAGE_SUFFIXES):
        p = image_dir / (xml.stem + suf)
        if p.is_file():
            return p
    return None


def read_voc(xmls: list[Path], image_dir: Path, names: list[str]) -> LabelIndex:
    """Index VOC xml files whose images lie in `image_dir`. An object whose name is not in
    `names` makes its image unusable (listed as a problem)."""
    to_class = {n: k for k, n in enumerate(names)}
    b = IndexBuilder()
    for xml in xmls:
        root = _parse(xml)
        if isinstance(root, str):
            b.skip(root)
            continue
        img = _find_image(xml, root, image_dir)
        if img is None:
            b.skip(f"{xml}: its image {root.findtext('filename')!r} is missing from {image_dir}")
            continue
        try:
            hw = (int(float(root.findtext("size/height") or 0)), int(float(root.findtext("size/width") or 0)))
        except ValueError:
            hw = (0, 0)
        if hw[0] <= 0 or hw[1] <= 0:  # some tools write size 0: read the image header instead
            hw = image_hw(img)
            if isinstance(hw, str):
                b.skip(hw)
                continue
        boxes, cls, where, problems = [], [], [], []
        for n, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            loc = f"{xml}: object #{n} ({name or 'no name'})"
            if name not in to_class:
                problems.append(f"{loc}: class {name!r} is not among the {len(names)} names")
                continue
            try:
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                problems.append(f"{loc}: missing or non-numeric bndbox")
                continue
            boxes.append((x1 - 1, y1 - 1, x2, y2))
            cls.append(to_class[name])
            where.append(loc)
        b.add_checked(img, hw, boxes, cls, len(names), where, problems)
    return b.build()
