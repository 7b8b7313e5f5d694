"""Pascal VOC xml: one `<annotation>` per image with `filename`, `size/width,height` and
`object/name, bndbox/xmin,ymin,xmax,ymax`. VOC pixel coordinates are 1-based and inclusive,
so a box becomes xyxy pixel edges `(xmin - 1, ymin - 1, xmax, ymax)`. Objects marked
`difficult` are kept as ordinary objects (darknet's voc_label.py drops them; an evaluator
that wants VOC's "ignore difficult" rule must read the xml itself)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from yolo4.data.formats.common import IMAGE_SUFFIXES, IndexBuilder, LabelIndex, image_hw, join_inside


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
    names: set[str] = set()
    for x in xmls:
        root = _parse(x)
        if not isinstance(root, str):
            names.update((o.findtext("name") or "").strip() for o in root.iter("object"))
    names.discard("")
    return sorted(names)


def _find_image(xml: Path, root: ET.Element, image_dir: Path) -> Path | str:
    """The image of an annotation: its <filename> in image_dir, else the xml's stem with an image
    suffix. Returns the path or a problem string."""
    fname = (root.findtext("filename") or "").strip()
    if fname:
        named = join_inside(image_dir, fname)
        if named is None:
            return f"{xml}: <filename> {fname!r} leads outside {image_dir}; not followed"
        if named.is_file():
            return named
    for suf in sorted(IMAGE_SUFFIXES):
        p = image_dir / (xml.stem + suf)
        if p.is_file():
            return p
    return f"{xml}: its image {fname or xml.stem!r} is missing from {image_dir}"


def _size(root: ET.Element, key: str) -> int:
    """An integer <size> entry; 0 when missing or not a finite number."""
    try:
        v = float(root.findtext(f"size/{key}") or 0)
    except ValueError:
        return 0
    return int(v) if 0 < v < 2**31 else 0


def images_without_xml(xmls: list[Path], image_dir: Path) -> list[Path]:
    """Images in `image_dir` that no annotation in `xmls` names by file stem (they are not used)."""
    from yolo4.data.formats.common import list_images

    stems = {x.stem for x in xmls}
    return [p for p in list_images(image_dir) if p.stem not in stems]


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
        if isinstance(img, str):
            b.skip(img)
            continue
        hw = (_size(root, "height"), _size(root, "width"))
        if hw[0] <= 0 or hw[1] <= 0:  # some tools write size 0: read the image header instead
            header_hw = image_hw(img)
            if isinstance(header_hw, str):
                b.skip(header_hw)
                continue
            hw = header_hw
        boxes, cls, where, problems = [], [], [], []
        for n, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            loc = f"{xml}: object #{n} ({name or 'no name'})"
            if name not in to_class:
                problems.append(f"{loc}: class {name!r} is not among the {len(names)} names")
                continue
            try:
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}") or "") for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                problems.append(f"{loc}: missing or non-numeric bndbox")
                continue
            boxes.append((x1 - 1, y1 - 1, x2, y2))
            cls.append(to_class[name])
            where.append(loc)
        b.add_checked(img, hw, boxes, cls, len(names), where, problems)
    return b.build()
