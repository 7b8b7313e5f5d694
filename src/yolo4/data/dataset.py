"""One dataset type for every source: `load_dataset(DATA, split)` -> `DetectionDataset`.

DATA may be
  * a folder, its layout detected: a `data.yaml` (or another `*.yaml` with `train`) or a darknet `*.data`
    inside; `images/` + `labels/` (YOLO txt; `images/train`, `images/val` if split);
    `images/` or `JPEGImages/` + `annotations/` or `Annotations/` with `*.xml` (VOC;
    `ImageSets/Main/{train,val}.txt` if split); or COCO `*.json` inside it or in its
    `annotations/` (a split when one name holds "train" and another "val");
  * a YAML file: `path` (root, relative to the YAML or else the working directory),
    `train`, `val` (folders of images,
    darknet image-list .txt files or lists of them, relative to `path`), `names` (a list or
    an {id: name} mapping; or `nc` for numbered names);
  * a darknet `.data` file: `classes`, `train`, `valid`, `names` (paths relative to the
    .data file, its parent folder or the working directory, as darknet runs from its root);
  * a COCO `.json` (images beside it, in `images/` or in the folder its name points at).

A source without a train/val split is split 90/10: the images are ranked by a seeded hash
of their path (relative to the data) and the first 10 % are `val`, so the split is
deterministic and barely moves when images are added. Training writes the split down beside
the data as darknet image lists (`autosplit_train.txt`, `autosplit_val.txt`; in the cache
folder if the data are read-only), and later readers of `val` take that list: the images that
training held out. `split="all"` gives every usable image; `evaluation_split` picks what
`yolo4 val` scores when no split is named (`all` for a source that has none).

Paths inside list files, VOC image sets and COCO/VOC file names may not climb out of their
folder (`../../etc/passwd`): such entries are listed as problems and not followed.

The label index is cached (`.yolo4-cache/` beside the data, or the cache folder), keyed by
the size and mtime of every image and label file, so a second start skips the parsing.
Unusable images are skipped; each problem names its file; a summary is logged
(`yolo4.data` logger) and kept in `DetectionDataset.problems`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import yaml

from yolo4.data.formats.coco import read_coco
from yolo4.data.formats.common import IMAGE_SUFFIXES, LabelIndex, join_inside, list_images, read_image_header
from yolo4.data.formats.voc import images_without_xml, read_voc, voc_names
from yolo4.data.formats.yolo import find_label, label_path_candidates, read_image_list, read_names, read_yolo
from yolo4.data.sources import load_image
from yolo4.errors import DataError

log = logging.getLogger("yolo4.data")

SPLITS = ("train", "val", "all")
VAL_FRACTION = 0.1
_CACHE_VERSION = "1"


def cache_root() -> Path:
    """Where yolo4 caches what it cannot write beside the data: $YOLO4_CACHE_DIR, else
    $XDG_CACHE_HOME/yolo4, else ~/.cache/yolo4."""
    if os.environ.get("YOLO4_CACHE_DIR"):
        return Path(os.environ["YOLO4_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolo4"


# ---------------------------------------------------------------- the dataset type
class DetectionDataset:
    """Images with their boxes and class ids, read lazily from disk.

    Attributes:
        names: class names; class id k is names[k].
        image_paths: the usable images, one per item.
        image_hw: int64 (N, 2) (height, width) of each image, from the index.
        problems: one line per skipped image or annotation, naming its file.
        num_skipped: how many images of the source were skipped.
        category_ids: for COCO sources, the COCO category id of each class; else None.
        split_origin: where the train/val split comes from ("ImageSets/Main/train.txt / val.txt",
            "the split training wrote to ...", ...), for messages.

    `cache_images()` keeps every decoded image in memory (YOLOv5's `--cache ram`): later
    `load` calls, and loader worker processes forked after it, skip the disk and the decoder.
    """

    def __init__(
        self,
        names: list[str],
        index: LabelIndex,
        source: Path | None = None,
        split: str = "all",
        category_ids: list[int] | None = None,
    ) -> None:
        self.names = list(names)
        self.image_paths = list(index.image_paths)
        self.image_hw = np.asarray(index.image_hw, np.int64).reshape(-1, 2)
        self._boxes = list(index.boxes)
        self._classes = list(index.class_ids)
        self.problems = list(index.problems)
        self.num_skipped = int(index.num_skipped)
        self.source = source
        self.split = split
        self.category_ids = category_ids
        self.split_origin = ""  # where the split came from, for messages (load_dataset fills it in)
        self._images: list[np.ndarray | None] = [None] * len(self.image_paths)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __repr__(self) -> str:
        return (
            f"DetectionDataset({self.source}, split={self.split!r}, images={len(self)}, "
            f"classes={len(self.names)}, skipped={self.num_skipped})"
        )

    def labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes float32 (N, 4) xyxy pixels and class ids int64 (N,) of item i (copies;
        no image is read)."""
        return self._boxes[i].copy(), self._classes[i].copy()

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item i: (image uint8 (H, W, 3) RGB, boxes float32 (N, 4) xyxy pixels, class_ids
        int64 (N,)). Raises DataError naming the file if the image cannot be decoded or has
        changed size since it was indexed."""
        path = self.image_paths[i]
        img = self._images[i]
        if img is not None:
            boxes, cls = self.labels(i)
            return img.copy(), boxes, cls
        img = load_image(path)
        if tuple(img.shape[:2]) != tuple(self.image_hw[i]):
            raise DataError(_size_mismatch(path, img.shape[:2], self.image_hw[i]))
        boxes, cls = self.labels(i)
        return img, boxes, cls

    __getitem__ = load

    def cache_bytes(self) -> int:
        """Memory that `cache_images` needs: 3 bytes per pixel of every image."""
        return int(self.image_hw.prod(1).sum()) * 3

    def cache_images(self, max_bytes: int | None = None, progress: bool = False) -> bool:
        """Decode every image once and keep it (uint8 RGB) for later `load` calls.

        Args:
            max_bytes: cache nothing when `cache_bytes()` exceeds this (default: a quarter of
                the machine's physical memory).
        Returns:
            True when cached. Images that fail to decode stay uncached (their `load` raises
            DataError as before); nothing else changes.
        """
        if max_bytes is None:
            max_bytes = _physical_memory() // 4
        need = self.cache_bytes()
        if need > max_bytes:
            log.info(
                "not caching %d images in memory: %.1f GB needed, %.1f GB allowed",
                len(self),
                need / 1e9,
                max_bytes / 1e9,
            )
            return False
        from tqdm import tqdm

        for i in tqdm(range(len(self)), desc="caching images", unit="img", disable=not progress, leave=False):
            if self._images[i] is None:
                with contextlib.suppress(DataError):
                    self._images[i] = self.load(i)[0]
        return True

    def subset(self, indices: list[int] | np.ndarray) -> DetectionDataset:
        """A dataset of items `indices` (e.g. a quick subset for the demo)."""
        idx = [int(i) for i in indices]
        sub = LabelIndex(
            [self.image_paths[i] for i in idx],
            self.image_hw[idx].reshape(-1, 2),
            [self._boxes[i] for i in idx],
            [self._classes[i] for i in idx],
            list(self.problems),
            self.num_skipped,
        )
        out = DetectionDataset(self.names, sub, self.source, self.split, self.category_ids)
        out.split_origin = self.split_origin
        out._images = [self._images[i] for i in idx]
        return out


def _size_mismatch(path: Path, got_hw, label_hw) -> str:
    msg = f"{path}: image is {got_hw[1]}x{got_hw[0]} but its labels were made for {label_hw[1]}x{label_hw[0]}"
    try:
        header = read_image_header(path)
    except DataError:
        return msg
    if header.swaps_axes and tuple(label_hw) == tuple(got_hw)[::-1]:
        msg += (
            f": the labels were drawn on the image turned by its EXIF orientation ({header.orientation}), "
            "which yolo4 ignores as darknet does; save the image with the rotation applied to its pixels"
        )
    return msg


def _physical_memory() -> int:
    """Bytes of physical memory (8 GiB when the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


# ---------------------------------------------------------------- sources
T = TypeVar("T")


def _required(value: T | None, what: str) -> T:
    """`value`, or a DataError when a dataset part lacks what its reader needs."""
    if value is None:
        raise DataError(f"the dataset part has no {what}")
    return value


@dataclass
class _Part:
    """How to index one part (a split, or the whole of an unsplit source)."""

    reader: str  # "yolo" | "coco" | "voc"
    images: list[Path] = field(default_factory=list)  # yolo
    json: Path | None = None  # coco
    xmls: list[Path] = field(default_factory=list)  # voc
    image_dir: Path | None = None  # voc
    problems: list[str] = field(default_factory=list)  # entries of list files that were not followed

    def key_files(self) -> list[Path]:
        if self.reader == "yolo":
            labels = [find_label(p) for p in self.images]
            return self.images + [p for p in labels if p is not None]
        if self.reader == "coco":
            return [_required(self.json, "COCO json file")]
        return list(self.xmls)


@dataclass
class _Source:
    path: Path  # what the user named
    anchor: Path  # the folder split lists and caches are written beside
    parts: dict[str, _Part]  # {"train", "val"} or {"all"}
    names: list[str] | None
    category_ids: list[int] | None = None
    split_from: str = ""  # where the train/val split comes from, for messages


def _yolo_part(spec, root: Path, where: Path, key: str) -> _Part:
    """The images named by a YAML / .data entry: folders, image-list .txt files, images, or a list of them."""
    specs = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    problems: list[str] = []
    for s in specs:
        if not isinstance(s, (str, int, float)) or isinstance(s, bool):
            raise DataError(f"{where}: {key}: {s!r} is not a path")
        p = Path(str(s)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += list_images(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            listed, bad = read_image_list(p, [p.parent, root, root.parent, Path.cwd()])
            out += listed
            problems += bad
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        else:
            raise DataError(f"{where}: {key}: {p} is not a folder, image list or image")
    if not out:
        raise DataError(f"{where}: {key}: no images in {', '.join(map(str, specs))}")
    return _Part("yolo", out, problems=problems)


def _names_from_yaml(doc: dict, where: Path) -> list[str]:
    names = doc.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except ValueError as e:
            raise DataError(f"{where}: names: keys must be class ids ({e})") from e
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: names: class ids must be 0..{len(keys) - 1}")
        out = [names[k] if k in names else names[str(k)] for k in keys]
    elif isinstance(names, list) and names:
        out = names
    elif isinstance(doc.get("nc"), int) and not isinstance(doc["nc"], bool) and 0 < doc["nc"] < 100_000:
        return [str(k) for k in range(doc["nc"])]
    else:
        raise DataError(f"{where}: no class `names` (or `nc`)")
    for k, n in enumerate(out):
        if not isinstance(n, (str, int, float)) or isinstance(n, bool):
            raise DataError(f"{where}: names: class {k} is a {type(n).__name__}, not a name")
    return [str(n) for n in out]


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None


def _from_yaml(path: Path) -> _Source:
    try:
        doc = yaml.safe_load(_read_text(path, "dataset YAML"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or "train" not in doc:
        raise DataError(f"{path}: dataset YAML needs at least `train` and `names`")
    root = Path(str(doc.get("path") or ".")).expanduser()
    if not root.is_absolute():  # relative to the YAML; else (Ultralytics' habit) to the working directory
        root = path.parent / root if (path.parent / root).is_dir() or not root.is_dir() else root.resolve()
    elif not root.is_dir():  # an absolute path from another machine: the data moved with the YAML
        root = path.parent
    names = _names_from_yaml(doc, path)
    parts = {"train": _yolo_part(doc["train"], root, path, "train")}
    if doc.get("val"):
        parts["val"] = _yolo_part(doc["val"], root, path, "val")
    else:
        parts = {"all": parts["train"]}
    return _Source(path, path.parent, parts, names, split_from=f"{path.name}: train / val")


def _from_darknet(path: Path) -> _Source:
    opts = {}
    for ln in _read_text(path, "darknet .data file").splitlines():
        if "=" in ln and not ln.lstrip().startswith("#"):
            k, v = ln.split("=", 1)
            opts[k.strip()] = v.strip()
    bases = [path.parent, path.parent.parent, Path.cwd()]

    def find(key: str) -> Path | None:
        if not opts.get(key):
            return None
        p = Path(opts[key]).expanduser()
        cands = [p] if p.is_absolute() else [b / p for b in bases]
        hit = next((c for c in cands if c.exists()), None)
        if hit is None:
            raise DataError(f"{path}: {key}={opts[key]}: no such file (looked in {', '.join(map(str, bases))})")
        return hit

    if not opts.get("train"):
        raise DataError(f"{path}: no `train=` line")
    names_file = find("names")
    if names_file is not None:
        names = read_names(names_file)
    elif opts.get("classes", "").isdigit():
        names = [str(k) for k in range(int(opts["classes"]))]
    else:
        raise DataError(f"{path}: needs `names=` or `classes=`")
    if opts.get("classes", "").isdigit() and int(opts["classes"]) != len(names):
        raise DataError(f"{path}: classes={opts['classes']} but {names_file} has {len(names)} names")

    def images(key: str) -> _Part:
        p = find(key)
        if p is None:
            raise DataError(f"{path}: no `{key}=` line")
        return _yolo_part(str(p), p.parent, path, key)

    valid_key = "valid" if opts.get("valid") else "val" if opts.get("val") else None
    if valid_key:
        parts = {"train": images("train"), "val": images(valid_key)}
    else:
        parts = {"all": images("train")}
    return _Source(path, path.parent, parts, names, split_from=f"{path.name}: train / {valid_key}")


def _from_coco(path: Path) -> _Source:
    return _Source(path, path.parent, {"all": _Part("coco", json=path)}, None)


def _folder_names(d: Path) -> list[str] | None:
    for p in [d / "classes.txt", d / "obj.names", *sorted(d.glob("*.names"))]:
        if p.is_file():
            return read_names(p)
    return None


def _is_dataset_yaml(path: Path) -> bool:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # (UnicodeDecodeError is a ValueError)
        return path.name == "data.yaml"  # a broken data.yaml is reported by _from_yaml
    return isinstance(doc, dict) and "train" in doc


def _from_folder(d: Path) -> _Source:
    for y in dict.fromkeys(
        p for p in [d / "data.yaml", *sorted(d.glob("*.yaml")), *sorted(d.glob("*.yml"))] if p.is_file()
    ):
        if _is_dataset_yaml(y):  # (a folder may also hold other YAML: hyper-parameters, ...)
            return _from_yaml(y)
    datas = sorted(d.glob("*.data"))
    if len(datas) == 1:
        return _from_darknet(datas[0])
    names = _folder_names(d)
    if (d / "images").is_dir() and (d / "labels").is_dir():
        img = d / "images"
        split_dirs = {
            s: next((img / n for n in alias if (img / n).is_dir()), None)
            for s, alias in (("train", ("train",)), ("val", ("val", "valid", "validation")))
        }
        train_dir, val_dir = split_dirs["train"], split_dirs["val"]
        if train_dir and val_dir:
            parts = {"train": _Part("yolo", list_images(train_dir)), "val": _Part("yolo", list_images(val_dir))}
        else:
            parts = {"all": _Part("yolo", list_images(img))}
        if not any(p.images for p in parts.values()):
            raise DataError(f"{img}: no images")
        split_from = (
            " / ".join(f"images/{p.name}" for p in (train_dir, val_dir) if p is not None) if "train" in parts else ""
        )
        return _Source(d, d, parts, names, split_from=split_from)
    ann = next((d / n for n in ("Annotations", "annotations") if (d / n).is_dir()), None)
    imgs = next((d / n for n in ("JPEGImages", "images") if (d / n).is_dir()), None)
    if ann is not None and imgs is not None and any(ann.glob("*.xml")):
        xmls = sorted(ann.glob("*.xml"))
        sets = d / "ImageSets" / "Main"
        if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
            parts = {}
            for s in ("train", "val"):
                ids = [ln.split()[0] for ln in _read_text(sets / f"{s}.txt", "image set").splitlines() if ln.strip()]
                listed = [join_inside(ann, f"{i}.xml") for i in ids]
                bad = [
                    f"{sets / s}.txt: {i} leads outside {ann}; not followed" for i, x in zip(ids, listed) if x is None
                ]
                xmls = [x for x in listed if x is not None]
                parts[s] = _Part("voc", xmls=xmls, image_dir=imgs, problems=bad)
        else:
            parts = {"all": _Part("voc", xmls=xmls, image_dir=imgs)}
        split_from = "ImageSets/Main/train.txt / val.txt" if "train" in parts else ""
        return _Source(d, d, parts, names or voc_names(xmls), split_from=split_from)
    jsons = sorted(d.glob("*.json")) + (sorted(ann.glob("*.json")) if ann is not None else [])
    if jsons:
        train = [j for j in jsons if "train" in j.name]
        val = [j for j in jsons if "val" in j.name]
        if len(train) == 1 and len(val) == 1:
            parts = {"train": _Part("coco", json=train[0]), "val": _Part("coco", json=val[0])}
            return _Source(d, d, parts, None, split_from=f"{train[0].name} / {val[0].name}")
        if len(jsons) == 1:
            return _from_coco(jsons[0])
        raise DataError(f"{d}: several COCO json files ({', '.join(j.name for j in jsons)}); name one")
    raise DataError(
        f"{d}: unknown dataset layout: expected a data.yaml, a darknet .data, images/ + labels/ "
        f"(YOLO txt), images/ + annotations/*.xml (VOC) or a COCO .json"
    )


def _resolve(path: Path) -> _Source:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _from_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _from_yaml(path)
    if suffix == ".data":
        return _from_darknet(path)
    if suffix == ".json":
        return _from_coco(path)
    raise DataError(f"{path}: unknown dataset file type {suffix!r}: expected a folder, .yaml, .data or COCO .json")


# ---------------------------------------------------------------- index, cache, split
def _stat_key(files: list[Path], extra: str) -> str:
    h = hashlib.sha1(f"{_CACHE_VERSION}|{extra}".encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}|missing\n".encode())
    return h.hexdigest()


def _can_write(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def _writable_dir(preferred: Path, fallback_tag: str) -> Path:
    """`preferred` if it can be created and written, else a folder in the cache root."""
    fallback = cache_root() / hashlib.sha1(fallback_tag.encode()).hexdigest()[:16]
    for d in (preferred, fallback):
        if _can_write(d):
            return d
    raise DataError(f"cannot write the label cache or split: {preferred} and {fallback} are read-only")


def _save_index(path: Path, key: str, idx: LabelIndex, names: list[str] | None, cat_ids: list[int] | None) -> None:
    counts = np.array([len(b) for b in idx.boxes], np.int64)
    boxes = np.concatenate(idx.boxes).reshape(-1, 4) if idx.boxes else np.zeros((0, 4), np.float32)
    classes = np.concatenate(idx.class_ids) if idx.class_ids else np.zeros(0, np.int64)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        key=np.array(key),
        files=np.array([str(p) for p in idx.image_paths], dtype=str),
        hw=idx.image_hw,
        counts=counts,
        boxes=boxes.astype(np.float32),
        classes=classes.astype(np.int64),
        problems=np.array(idx.problems, dtype=str),
        skipped=np.array(idx.num_skipped),
        names=np.array(names if names is not None else [], dtype=str),
        has_names=np.array(names is not None),
        cat_ids=np.array(cat_ids if cat_ids is not None else [], np.int64),
    )
    os.replace(tmp, path)


def _load_index(path: Path, key: str) -> tuple[LabelIndex, list[str] | None, list[int] | None] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            counts = z["counts"]
            splits = np.cumsum(counts)[:-1]
            idx = LabelIndex(
                [Path(p) for p in z["files"].tolist()],
                z["hw"].reshape(-1, 2),
                list(np.split(z["boxes"], splits)) if len(counts) else [],
                list(np.split(z["classes"], splits)) if len(counts) else [],
                z["problems"].tolist(),
                int(z["skipped"]),
            )
            names = z["names"].tolist() if bool(z["has_names"]) else None
            cat_ids = z["cat_ids"].tolist() or None
            return idx, names, cat_ids
    except (OSError, KeyError, ValueError):
        return None


def _index_part(
    src: _Source, part_name: str, cache: bool, progress: bool
) -> tuple[LabelIndex, list[str] | None, list[int] | None]:
    part = src.parts[part_name]
    names, cat_ids = src.names, None
    key = _stat_key(part.key_files(), f"{part.reader}|{part_name}|{names}|{part.image_dir}")
    cache_file, hit = None, None
    if cache:
        tag = hashlib.sha1(f"{src.path.resolve()}|{part_name}".encode()).hexdigest()[:12]
        cache_dir = _writable_dir(src.anchor / ".yolo4-cache", str(src.anchor.resolve()))
        cache_file = cache_dir / f"{part_name}-{tag}.npz"
        hit = _load_index(cache_file, key)
    if hit is not None:
        idx, names, cat_ids = hit
    else:
        if part.reader == "yolo":
            idx = read_yolo(part.images, len(names) if names is not None else None, progress)
        elif part.reader == "voc":
            idx = read_voc(part.xmls, _required(part.image_dir, "VOC image folder"), names or [])
        else:
            idx, names, cat_ids = read_coco(_required(part.json, "COCO json file"))
        if cache_file is not None:
            _save_index(cache_file, key, idx, names, cat_ids)
    unused = _unused_files(part, part_name, idx)
    if part.problems or unused:  # (not cached: list files and folders are read on every start)
        idx = LabelIndex(
            idx.image_paths,
            idx.image_hw,
            idx.boxes,
            idx.class_ids,
            part.problems + idx.problems + unused,
            idx.num_skipped + len(part.problems),
        )
    return idx, names, cat_ids


def _unused_files(part: _Part, part_name: str, idx: LabelIndex) -> list[str]:
    """Files beside a part that it does not use, one line each: label files of a `labels/`
    folder without an image, and (VOC without image sets) images without an annotation."""
    if part.reader == "voc" and part.image_dir is not None and part_name == "all":
        used = set(idx.image_paths)
        return [
            f"{p}: image without an annotation xml; not used (an image without objects needs an xml without <object>)"
            for p in images_without_xml(part.xmls, part.image_dir)
            if p not in used
        ]
    if part.reader != "yolo":
        return []
    expected = {label_path_candidates(p)[0] for p in part.images}  # where each image's label would be
    folders = {p.parent for p in expected if "labels" in p.parts}
    out = []
    for d in sorted(folders):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            f = d / n
            if n.endswith(".txt") and n != "classes.txt" and f not in expected and f.is_file():
                out.append(f"{f}: label file without an image; not used")
    return out


def split_rank(paths: list[Path], anchor: Path, seed: int) -> np.ndarray:
    """Order in which images go to `val` (first) in an automatic split: a seeded hash of
    each path relative to `anchor`. Returns int64 (N,) indices into `paths`."""
    keys = []
    for p in paths:
        try:
            rel = p.resolve().relative_to(anchor.resolve()).as_posix()
        except ValueError:
            rel = p.as_posix()
        keys.append(hashlib.sha1(f"{seed}|{rel}".encode()).hexdigest())
    return np.argsort(np.array(keys, dtype=str), kind="stable").astype(np.int64)


def _split_prefix(src: _Source) -> str:
    return "autosplit" if src.path.is_dir() else f"{src.path.stem}.autosplit"


def _split_folders(src: _Source) -> list[Path]:
    """Where an automatic split is written down: beside the data, else in the cache folder."""
    return [src.anchor, cache_root() / hashlib.sha1(str(src.anchor.resolve()).encode()).hexdigest()[:16]]


def written_split(src: _Source) -> Path | None:
    """The `..._val.txt` a training run wrote for this unsplit source, if there is one."""
    name = f"{_split_prefix(src)}_val.txt"
    return next((f / name for f in _split_folders(src) if (f / name).is_file()), None)


def _auto_split(idx: LabelIndex, src: _Source, seed: int, write: bool) -> tuple[dict[str, LabelIndex], str]:
    """The 90/10 split of an unsplit source, and where it came from.

    With `write` (training) the seeded hash decides and the lists are written down; otherwise a
    list written by training is read back (what that training held out), else the hash decides.
    """
    n = len(idx)
    listed = None if write else written_split(src)
    if listed is not None:
        try:
            held_out = {ln.strip() for ln in listed.read_text(encoding="utf-8").splitlines() if ln.strip()}
        except (OSError, ValueError) as e:
            log.warning("%s: cannot read the written split (%s); using the seeded split", listed, e)
            held_out = set()
        val = [i for i in range(n) if str(idx.image_paths[i]) in held_out]
        if val:
            train = [i for i in range(n) if str(idx.image_paths[i]) not in held_out]
            return {"train": idx.select(train), "val": idx.select(val)}, f"the split training wrote to {listed}"
        log.warning("%s lists none of the images of %s; using the seeded split", listed, src.path)
    n_val = 0 if n < 2 else max(1, round(VAL_FRACTION * n))
    order = split_rank(idx.image_paths, src.anchor, seed)
    val_set = set(order[:n_val].tolist())
    val = [i for i in range(n) if i in val_set]
    train = [i for i in range(n) if i not in val_set]
    out = {"train": idx.select(train), "val": idx.select(val)}
    if write:
        folder = _writable_dir(src.anchor, str(src.anchor.resolve()))
        for s, sub in out.items():
            f = folder / f"{_split_prefix(src)}_{s}.txt"
            text = "".join(f"{p}\n" for p in sub.image_paths)
            try:
                if not f.is_file() or f.read_text() != text:  # (atomically: other processes may read it)
                    tmp = f.with_name(f"{f.name}.tmp{os.getpid()}")
                    tmp.write_text(text)
                    os.replace(tmp, f)
            except OSError as e:
                log.warning("could not write the split list %s (%s)", f, e)
    return out, f"a seeded {round(100 * (1 - VAL_FRACTION))}/{round(100 * VAL_FRACTION)} split of a source without one"


def evaluation_split(data: str | os.PathLike) -> str:
    """The split `yolo4 val` scores when none is asked for: `val` of a source that defines a
    split or whose 90/10 split a training wrote down, else `all` (every image)."""
    src = _resolve(Path(data).expanduser())
    if "all" not in src.parts or written_split(src) is not None:
        return "val"
    return "all"


def load_dataset(
    data: str | os.PathLike,
    split: str = "train",
    *,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
    write_split: bool = False,
) -> DetectionDataset:
    """Read a dataset (see the module docstring for what `data` may be).

    Args:
        data: a folder, a dataset YAML, a darknet .data file or a COCO .json.
        split: "train", "val" or "all".
        seed: seed of the automatic 90/10 split of sources that have no split.
        cache: read/write the label index cache.
        write_split: for a source without a split, write its 90/10 split down (training does);
            otherwise a split written earlier is used, else the seeded one.
    Returns:
        the dataset; `split_origin` says where its split came from.
    Raises:
        DataError naming the file if the source is unusable (missing, unknown layout, no images).
    """
    if split not in SPLITS:
        raise DataError(f"{data}: unknown split {split!r}; choose one of {SPLITS}")
    src = _resolve(Path(data).expanduser())
    parts = list(src.parts)
    if "all" in src.parts:
        idx, names, cat_ids = _index_part(src, "all", cache, progress)
        origin = "every image (the source defines no split)"
        if split != "all":
            splits, origin = _auto_split(idx, src, seed, write_split)
            idx = splits[split]
    else:
        origin = (src.split_from or "the source's own split") if split != "all" else "every image of both splits"
        wanted = ["train", "val"] if split == "all" else [split]
        got = [_index_part(src, p, cache, progress) for p in wanted]
        idx = LabelIndex()
        for g, _, _ in got:
            idx = LabelIndex(
                idx.image_paths + g.image_paths,
                np.concatenate([idx.image_hw, g.image_hw]),
                idx.boxes + g.boxes,
                idx.class_ids + g.class_ids,
                idx.problems + g.problems,
                idx.num_skipped + g.num_skipped,
            )
        names, cat_ids = got[0][1], got[0][2]
    if names is None:  # YOLO folder without a names file: number the classes
        top = max((int(c.max()) for c in idx.class_ids if len(c)), default=-1)
        names = [str(k) for k in range(top + 1)]
    ds = DetectionDataset(names, idx, src.path, split, cat_ids)
    ds.split_origin = origin
    if len(ds) == 0:
        raise DataError(
            f"{src.path}: no usable images in split {split!r} (parts: {parts}); "
            f"{ds.num_skipped} skipped" + (f", first problem: {ds.problems[0]}" if ds.problems else "")
        )
    if ds.problems:
        shown = "\n  ".join(ds.problems[:5])
        more = f"\n  ... and {len(ds.problems) - 5} more" if len(ds.problems) > 5 else ""
        log.warning(
            "%s [%s]: %d image(s) skipped, %d problem(s) (`yolo4 dataset check --data %s` lists them all):\n  %s%s",
            src.path,
            split,
            ds.num_skipped,
            len(ds.problems),
            src.path,
            shown,
            more,
        )
    return ds
