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
deterministic and barely moves when images are added. The split is written down beside the
data as darknet image lists (`autosplit_train.txt`, `autosplit_val.txt`; in the cache folder
if the data are read-only). `split="all"` gives every usable image.

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

import numpy as np
import yaml

from yolo4.data.formats.coco import read_coco
from yolo4.data.formats.common import IMAGE_SUFFIXES, LabelIndex, list_images
from yolo4.data.formats.voc import read_voc, voc_names
from yolo4.data.formats.yolo import find_label, read_image_list, read_names, read_yolo
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
        split_from: where the train/val split comes from ("ImageSets/Main/train.txt / val.txt",
            "an automatic 90% / 10% split ...", ...), for messages.

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
        self.split_from = ""  # where the train/val split comes from (load_dataset fills it in)
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
            raise DataError(
                f"{path}: image is {img.shape[1]}x{img.shape[0]} but its labels were made "
                f"for {self.image_hw[i][1]}x{self.image_hw[i][0]}"
            )
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
        out.split_from = self.split_from
        out._images = [self._images[i] for i in idx]
        return out


def _physical_memory() -> int:
    """Bytes of physical memory (8 GiB when the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


# ---------------------------------------------------------------- sources
@dataclass
class _Part:
    """How to index one part (a split, or the whole of an unsplit source)."""

    reader: str  # "yolo" | "coco" | "voc"
    images: list[Path] = field(default_factory=list)  # yolo
    json: Path | None = None  # coco
    xmls: list[Path] = field(default_factory=list)  # voc
    image_dir: Path | None = None  # voc

    def key_files(self) -> list[Path]:
        if self.reader == "yolo":
            labels = [find_label(p) for p in self.images]
            return self.images + [p for p in labels if p is not None]
        if self.reader == "coco":
            return [self.json]
        return list(self.xmls)


@dataclass
class _Source:
    path: Path  # what the user named
    anchor: Path  # the folder split lists and caches are written beside
    parts: dict[str, _Part]  # {"train", "val"} or {"all"}
    names: list[str] | None
    category_ids: list[int] | None = None
    split_from: str = ""  # where the train/val split comes from, for messages


def _images_from_spec(spec, root: Path, where: Path, key: str) -> list[Path]:
    specs = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    for s in specs:
        p = Path(str(s)).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += list_images(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            out += read_image_list(p, [p.parent, root, root.parent, Path.cwd()])
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        else:
            raise DataError(f"{where}: {key}: {p} is not a folder, image list or image")
    if not out:
        raise DataError(f"{where}: {key}: no images in {', '.join(map(str, specs))}")
    return out


def _names_from_yaml(doc: dict, where: Path) -> list[str]:
    names = doc.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except ValueError as e:
            raise DataError(f"{where}: names: keys must be class ids ({e})") from e
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: names: class ids must be 0..{len(keys) - 1}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    if isinstance(doc.get("nc"), int):
        return [str(k) for k in range(doc["nc"])]
    raise DataError(f"{where}: no class `names` (or `nc`)")


def _from_yaml(path: Path) -> _Source:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read dataset YAML ({e})") from e
    if not isinstance(doc, dict) or "train" not in doc:
        raise DataError(f"{path}: dataset YAML needs at least `train` and `names`")
    root = Path(str(doc.get("path") or ".")).expanduser()
    if not root.is_absolute():  # relative to the YAML; else (Ultralytics' habit) to the working directory
        root = path.parent / root if (path.parent / root).is_dir() or not root.is_dir() else root.resolve()
    elif not root.is_dir():  # an absolute path from another machine: the data moved with the YAML
        root = path.parent
    names = _names_from_yaml(doc, path)
    parts = {"train": _Part("yolo", _images_from_spec(doc["train"], root, path, "train"))}
    if doc.get("val"):
        parts["val"] = _Part("yolo", _images_from_spec(doc["val"], root, path, "val"))
    else:
        parts = {"all": parts["train"]}
    return _Source(path, path.parent, parts, names, split_from=f"{path.name}: train / val")


def _from_darknet(path: Path) -> _Source:
    opts = {}
    try:
        for ln in path.read_text().splitlines():
            if "=" in ln and not ln.lstrip().startswith("#"):
                k, v = ln.split("=", 1)
                opts[k.strip()] = v.strip()
    except OSError as e:
        raise DataError(f"{path}: cannot read darknet .data file ({e})") from e
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

    def images(key: str) -> list[Path]:
        p = find(key)
        return _images_from_spec(str(p), p.parent, path, key)

    valid_key = "valid" if opts.get("valid") else "val" if opts.get("val") else None
    if valid_key:
        parts = {"train": _Part("yolo", images("train")), "val": _Part("yolo", images(valid_key))}
    else:
        parts = {"all": _Part("yolo", images("train"))}
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
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
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
        if split_dirs["train"] and split_dirs["val"]:
            parts = {s: _Part("yolo", list_images(p)) for s, p in split_dirs.items()}
        else:
            parts = {"all": _Part("yolo", list_images(img))}
        if not any(p.images for p in parts.values()):
            raise DataError(f"{img}: no images")
        split_from = " / ".join(f"images/{p.name}" for p in split_dirs.values()) if "train" in parts else ""
        return _Source(d, d, parts, names, split_from=split_from)
    ann = next((d / n for n in ("Annotations", "annotations") if (d / n).is_dir()), None)
    imgs = next((d / n for n in ("JPEGImages", "images") if (d / n).is_dir()), None)
    if ann is not None and imgs is not None and any(ann.glob("*.xml")):
        xmls = sorted(ann.glob("*.xml"))
        sets = d / "ImageSets" / "Main"
        if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
            parts = {}
            for s in ("train", "val"):
                ids = [ln.split()[0] for ln in (sets / f"{s}.txt").read_text().splitlines() if ln.strip()]
                parts[s] = _Part("voc", xmls=[ann / f"{i}.xml" for i in ids], image_dir=imgs)
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
    cache_file = None
    if cache:
        tag = hashlib.sha1(f"{src.path.resolve()}|{part_name}".encode()).hexdigest()[:12]
        cache_dir = _writable_dir(src.anchor / ".yolo4-cache", str(src.anchor.resolve()))
        cache_file = cache_dir / f"{part_name}-{tag}.npz"
        hit = _load_index(cache_file, key)
        if hit is not None:
            return hit
    if part.reader == "yolo":
        idx = read_yolo(part.images, len(names) if names is not None else None, progress)
    elif part.reader == "voc":
        idx = read_voc(part.xmls, part.image_dir, names or [])
    else:
        idx, names, cat_ids = read_coco(part.json)
    if cache_file is not None:
        _save_index(cache_file, key, idx, names, cat_ids)
    return idx, names, cat_ids


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


def _auto_split(idx: LabelIndex, src: _Source, seed: int) -> dict[str, LabelIndex]:
    n = len(idx)
    n_val = 0 if n < 2 else max(1, round(VAL_FRACTION * n))
    order = split_rank(idx.image_paths, src.anchor, seed)
    val_set = set(order[:n_val].tolist())
    val = [i for i in range(n) if i in val_set]
    train = [i for i in range(n) if i not in val_set]
    out = {"train": idx.select(train), "val": idx.select(val)}
    prefix = "autosplit" if src.path.is_dir() else f"{src.path.stem}.autosplit"
    folder = _writable_dir(src.anchor, str(src.anchor.resolve()))
    for s, sub in out.items():
        f = folder / f"{prefix}_{s}.txt"
        text = "".join(f"{p}\n" for p in sub.image_paths)
        try:
            if not f.is_file() or f.read_text() != text:
                f.write_text(text)
        except OSError as e:
            log.warning("could not write the split list %s (%s)", f, e)
    return out


def load_dataset(
    data: str | Path, split: str = "train", *, seed: int = 0, cache: bool = True, progress: bool = True
) -> DetectionDataset:
    """Read a dataset (see the module docstring for what `data` may be).

    Args:
        data: a folder, a dataset YAML, a darknet .data file or a COCO .json.
        split: "train", "val" or "all".
        seed: seed of the automatic 90/10 split of sources that have no split.
        cache: read/write the label index cache.
    Raises:
        DataError naming the file if the source is unusable (missing, unknown layout, no images).
    """
    if split not in SPLITS:
        raise DataError(f"{data}: unknown split {split!r}; choose one of {SPLITS}")
    src = _resolve(Path(data).expanduser())
    parts = list(src.parts)
    if "all" in src.parts:
        idx, names, cat_ids = _index_part(src, "all", cache, progress)
        if split != "all":
            idx = _auto_split(idx, src, seed)[split]
    else:
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
    ds.split_from = src.split_from or (
        f"an automatic {1 - VAL_FRACTION:.0%} / {VAL_FRACTION:.0%} split (seed {seed}; listed in autosplit_*.txt)"
    )
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
