"""Run a detector over a dataset and measure it: COCO metrics, darknet-style mAP, per-class
table, PR curves, confusion matrix and per-stage speed.

    from yolo4.evaluation.evaluate import evaluate
    metrics = evaluate(detector, dataset, batch_size=16)   # the training loop calls this
    print(metrics.summary()); print(metrics.table())

`detector` is either a `yolo4.inference.detector.Detector` (anything with
`predict_batch(images) -> [result with .boxes, .scores, .class_ids, .timings]`) or a plain
callable taking a list of RGB uint8 images (H_i, W_i, 3) and returning one
`(boxes (M, 4) xyxy original-image pixels, scores (M,), class_ids (M,))` per image (then
only the total time per image is known, reported as network time).

`dataset` needs `names`, `__len__` and `load(i) -> (image uint8 RGB (H, W, 3), boxes
float (N, 4) xyxy pixels, class_ids int (N,))`; optional `image_paths`, `image_ids` and
`category_ids` (COCO ids, used by `--json`).

A dataset read from a COCO json (`dataset.source`, as `yolo4.data.load_dataset` records it)
is scored against that file itself, so the COCO numbers are the official ones: crowd
regions are ignored rather than counted as missed objects and small/medium/large use the
file's segment areas. Other sources are scored against their boxes (box areas, no crowd).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from yolo4.errors import DataError, Yolo4Error
from yolo4.evaluation.metrics import (
    COCO80_TO_COCO91,
    Metrics,
    coco_evaluate,
    comparison_table,
    write_coco_json,
)
from yolo4.inference.fastpath import SpeedConfig
from yolo4.inference.tiles import TileConfig, TiledDetector
from yolo4.ops.nms import VAL_POSTPROCESS, PostprocessConfig


class EvalDataset(Protocol):
    """What `evaluate` needs from a dataset."""

    @property
    def names(self) -> Sequence[str]: ...

    def __len__(self) -> int: ...

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


DetectFn = Callable[[list[np.ndarray]], Sequence[tuple[Any, Any, Any]]]

# Detector.timings keys -> Metrics.speed keys
_STAGES = {"preprocess": "preprocess_ms", "network": "inference_ms", "postprocess": "nms_ms"}


def _np(x: Any, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _detect_batch(
    detector: Any, images: list[np.ndarray]
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, float]]:
    """Run one batch. Returns per image (boxes (M, 4), scores (M,), class_ids (M,)) and the
    batch's per-image stage times in ms."""
    if hasattr(detector, "predict_batch"):
        results = detector.predict_batch(images)
        out = [
            (
                _np(r.boxes, np.float64).reshape(-1, 4),
                _np(r.scores, np.float64).reshape(-1),
                _np(r.class_ids, np.int64).reshape(-1),
            )
            for r in results
        ]
        timings = dict(results[0].timings) if results and getattr(results[0], "timings", None) else {}
        for r in results:
            if getattr(r, "image", None) is not None:
                r.image = None  # do not keep every decoded image alive
        return out, timings
    t0 = time.perf_counter()
    results = detector(images)
    ms = (time.perf_counter() - t0) * 1e3 / max(len(images), 1)
    out = [
        (_np(b, np.float64).reshape(-1, 4), _np(s, np.float64).reshape(-1), _np(c, np.int64).reshape(-1))
        for b, s, c in results
    ]
    return out, {"network": ms}


def _image_ids(dataset: Any) -> list[int]:
    """COCO image ids: the dataset's, else the numeric file stems (COCO's 000000397133.jpg),
    else 1..N."""
    ids = getattr(dataset, "image_ids", None)
    if ids is not None and len(ids) == len(dataset):
        return [int(i) for i in ids]
    paths = getattr(dataset, "image_paths", None)
    if paths is not None and len(paths) == len(dataset):
        stems = [Path(p).stem for p in paths]
        if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
            return [int(s) for s in stems]
    return list(range(1, len(dataset) + 1))


def _coco_annotations(dataset: Any) -> tuple[Path, list[int]] | None:
    """(annotation file, COCO image id of each item) when the dataset was read from a COCO
    json (`dataset.source`) whose file names identify every item; else None."""
    src = getattr(dataset, "source", None)
    paths = getattr(dataset, "image_paths", None)
    if src is None or paths is None or Path(src).suffix.lower() != ".json" or not Path(src).is_file():
        return None
    try:
        doc = json.loads(Path(src).read_text())
        by_name: dict[str, list[int]] = {}
        for im in doc["images"]:
            by_name.setdefault(Path(im["file_name"]).name, []).append(int(im["id"]))
        # what pycocotools reads from every annotation; a file without them is scored by its boxes
        if not all({"id", "image_id", "category_id", "bbox", "area"} <= a.keys() for a in doc.get("annotations", [])):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    ids = []
    for p in paths:
        found = by_name.get(Path(p).name, [])
        if len(found) != 1:
            return None
        ids.append(found[0])
    return Path(src), ids


def _category_ids(dataset: Any) -> list[int]:
    """COCO category ids: the dataset's, else COCO's 1..90 ids for darknet's 80 COCO names,
    else 1..C."""
    ids = getattr(dataset, "category_ids", None)
    names = list(dataset.names)
    if ids is not None and len(ids) == len(names):
        return [int(i) for i in ids]
    from yolo4.data.names import COCO_NAMES

    if tuple(names) == COCO_NAMES:
        return list(COCO80_TO_COCO91)
    return list(range(1, len(names) + 1))


class Predictions(NamedTuple):
    """What `predict_dataset` returns (see there)."""

    gts: list[tuple[np.ndarray, np.ndarray]]
    preds: list[Any]
    sizes: list[tuple[int, int]]
    speed: dict[str, float]
    kept: list[int]  # the dataset index of each entry above
    skipped: list[str]  # one problem line per image that could not be decoded (left out)


def predict_dataset(detector: Any, dataset: EvalDataset, batch_size: int = 16, progress: bool = True) -> Predictions:
    """Detections and ground truth of every image that can be decoded.

    Returns:
        Predictions: gts per image (boxes (N, 4) xyxy, class_ids (N,)); preds per image (boxes
        (M, 4) xyxy, scores (M,), class_ids (M,)); image sizes (height, width); speed: mean ms
        per image of each stage ("preprocess_ms", "inference_ms", "nms_ms" = decode + NMS),
        "fps" = 1000 / inference_ms, and "batch" (the first batch is a warm-up and left out of
        the timing when there is more than one); kept: the dataset index of each image; skipped:
        the images that could not be decoded (a truncated download, say), each with its file and
        problem. They are left out, as training leaves them out, rather than stopping the run.
    Raises:
        DataError when the dataset is empty or no image of it can be decoded.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise Yolo4Error(f"batch size must be >= 1, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise DataError("the dataset has no images to evaluate on")
    starts = list(range(0, n, batch_size))

    def load(start: int) -> list[tuple[int, Any]]:
        items: list[tuple[int, Any]] = []
        for i in range(start, min(start + batch_size, n)):
            try:
                items.append((i, dataset.load(i)))
            except DataError as e:
                items.append((i, e))
        return items

    out = Predictions([], [], [], {}, [], [])
    totals: dict[str, float] = {}
    timed = 0
    bar = tqdm(total=n, desc="val", unit="img", disable=not progress, file=sys.stderr, leave=False)
    with ThreadPoolExecutor(max_workers=1) as pool:  # decode the next batch while this one runs
        pending = pool.submit(load, starts[0])
        for k, _ in enumerate(starts):
            loaded = pending.result()
            if k + 1 < len(starts):
                pending = pool.submit(load, starts[k + 1])
            out.skipped.extend(str(item) for _, item in loaded if isinstance(item, DataError))
            items = [(i, item) for i, item in loaded if not isinstance(item, DataError)]
            bar.update(len(loaded))
            if not items:
                continue
            images = [item[0] for _, item in items]
            dets, timings = _detect_batch(detector, images)
            if len(dets) != len(images):
                raise Yolo4Error(f"the detector returned {len(dets)} results for {len(images)} images")
            for (i, (img, boxes, classes)), p in zip(items, dets):
                out.gts.append((_np(boxes, np.float64).reshape(-1, 4), _np(classes, np.int64).reshape(-1)))
                out.preds.append(p)
                out.sizes.append((int(img.shape[0]), int(img.shape[1])))
                out.kept.append(i)
            if k > 0 or len(starts) == 1:
                for stage, ms in timings.items():
                    totals[stage] = totals.get(stage, 0.0) + ms * len(images)
                timed += len(images)
    bar.close()
    if not out.kept:
        raise DataError(f"none of the {n} images can be decoded: {out.skipped[0]}")
    speed = out.speed
    speed.update({_STAGES.get(stage, f"{stage}_ms"): total / max(timed, 1) for stage, total in totals.items()})
    if speed.get("inference_ms", 0) > 0:
        speed["fps"] = 1e3 / speed["inference_ms"]
    speed["batch"] = float(batch_size)
    return out


def evaluate(
    detector: Any,
    dataset: EvalDataset,
    batch_size: int = 16,
    progress: bool = True,
    save_json: str | os.PathLike | None = None,
    plots_dir: str | os.PathLike | None = None,
) -> Metrics:
    """Accuracy and speed of `detector` on `dataset` (see the module docstring for both).

    Args:
        batch_size: images per detector call.
        save_json: write COCO-format results here (pycocotools' `loadRes` reads them).
        plots_dir: write `pr_curves.png` and `confusion_matrix.png` here.
    Returns:
        Metrics, with `speed` filled (ms per image per stage, FPS of the network alone,
        batch, and the network input size when the detector has `input_hw`).
    """
    names = list(dataset.names)
    num_classes = getattr(detector, "num_classes", None)
    if num_classes is not None and int(num_classes) != len(names):
        raise DataError(
            f"the model has {num_classes} classes but the dataset has {len(names)} ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''})"
        )
    gts, preds, sizes, speed, kept, skipped = predict_dataset(
        detector, dataset, batch_size=batch_size, progress=progress
    )
    for problem in skipped:
        print(f"warning: {problem}: left out of the evaluation", file=sys.stderr)
    input_hw = getattr(detector, "input_hw", None)
    if input_hw is not None:
        speed["img_h"], speed["img_w"] = float(input_hw[0]), float(input_hw[1])
    image_ids, category_ids = _image_ids(dataset), _category_ids(dataset)
    official = _coco_annotations(dataset)
    coco_gt_json = None
    if official is not None and getattr(dataset, "category_ids", None) is not None:
        coco_gt_json, image_ids = official
    image_ids = [image_ids[i] for i in kept]  # (COCOeval scores only these: a skipped image's boxes do not count)
    metrics = coco_evaluate(
        gts, preds, names, image_sizes=sizes, image_ids=image_ids, category_ids=category_ids, coco_gt_json=coco_gt_json
    )
    metrics.speed = speed
    metrics.skipped = skipped
    if save_json is not None:
        write_coco_json(preds, image_ids, save_json, category_ids=category_ids)
    if plots_dir is not None:
        from yolo4.viz.plots import plot_confusion_matrix, plot_pr_curves

        plot_pr_curves(metrics, names, Path(plots_dir) / "pr_curves.png")
        plot_confusion_matrix(metrics, names, Path(plots_dir) / "confusion_matrix.png")
    return metrics


PathLike = str | os.PathLike


def _as_list(x: PathLike | Sequence[PathLike] | None) -> list:
    if x is None:
        return []
    if isinstance(x, (str, os.PathLike)):
        return [x]
    return list(x)


def model_pairs(
    model: PathLike | Sequence[PathLike] | None, weights: PathLike | Sequence[PathLike] | None
) -> list[tuple[PathLike | None, PathLike | None]]:
    """The (model, weights) pairs `yolo4 val` scores, in order: every darknet model (zoo name or
    .cfg) with every darknet weights file, then every exported .onnx / .tflite file on its own.
    An exported file passed as weights (the old spelling) counts as an exported model.

    Raises Yolo4Error for several darknet models with several weights files (no pairing is
    obvious) and for darknet weights without a darknet model."""
    from yolo4.inference.runtime import is_exported

    models, all_weights = _as_list(model), _as_list(weights)
    exported = [m for m in models if is_exported(m)] + [w for w in all_weights if is_exported(w)]
    darknet = [m for m in models if not is_exported(m)]
    darknet_weights = [w for w in all_weights if not is_exported(w)]
    if len(darknet) > 1 and len(darknet_weights) > 1:
        raise Yolo4Error(
            f"{len(darknet)} darknet models and {len(darknet_weights)} weights files: compare several --weights "
            "of one --model, or run val once per model"
        )
    if darknet_weights and not darknet:
        raise Yolo4Error(
            f"--weights {darknet_weights[0]}: darknet weights need --model (a zoo name or the .cfg they belong to)"
        )
    pairs: list[tuple[PathLike | None, PathLike | None]] = [
        (m, w) for m in darknet for w in (darknet_weights or [None])
    ]
    pairs += [(e, None) for e in exported]
    if not pairs:
        raise Yolo4Error("no model: give --model (a zoo name or .cfg with --weights, or an exported .onnx / .tflite)")
    return pairs


def run_val(
    data: str | os.PathLike,
    *,
    split: str | None = None,
    model: PathLike | Sequence[PathLike] | None = None,
    weights: PathLike | Sequence[PathLike] | None = None,
    img_size: int | None = None,
    batch: int = 16,
    resize: str | None = None,
    postprocess: PostprocessConfig = VAL_POSTPROCESS,
    device: str = "auto",
    json_path: str | os.PathLike | None = None,
    out: str | os.PathLike | None = "runs/val",
    progress: bool = True,
    tile: TileConfig | None = None,
    runtime: str = "auto",
    speed: SpeedConfig | None = None,
) -> list[Metrics]:
    """`yolo4 val`: build the Detector (the same pre-processing as `yolo4 detect`; post-processing
    `postprocess`, default `VAL_POSTPROCESS`: conf 0.001, NMS 0.6, every class above conf),
    evaluate it on `split` of `data` (default: `val` of a source with a split, or whose 90/10
    split a training wrote down; else every image), print the per-class table (worst first), the COCO
    numbers, the darknet-style mAPs and the speed line; write the plots (and the report as
    `per_class.txt`) to the folder `out`, COCO results to `json_path` (a relative path is taken
    inside `out`).

    `model` and `weights` may each list several files (see `model_pairs`): every darknet model
    with every darknet weights file, and every exported .onnx / .tflite on its own. Each is
    evaluated on the same images, its files go to `out/<file name>/`, and a comparison table
    ends the report. `tile` evaluates tiled inference (`yolo4.inference.tiles`), to measure
    what it gains on small objects. `runtime` runs the exported files ("auto": the fastest installed;
    see `build_detector`); darknet models run in PyTorch, as `speed` says
    (`yolo4.inference.fastpath.SpeedConfig`; default: the device's, the fast path on CUDA).

    Returns:
        one Metrics per (model, weights) pair, in order.
    """
    from yolo4.data.dataset import evaluation_split, load_dataset
    from yolo4.inference.detector import Detector, build_detector

    pairs = model_pairs(model, weights)
    split = split or evaluation_split(data)
    dataset = load_dataset(data, split)
    names = list(dataset.names)
    several = len(pairs) > 1
    root = Path(out) if out is not None else None
    results: list[Metrics] = []
    labels: list[str] = []
    for m, w in pairs:
        base = build_detector(
            m, w, names, img_size, resize, runtime=runtime, postprocess=postprocess, device=device, speed=speed
        )
        detector: Detector | TiledDetector = base if tile is None else TiledDetector(base, tile)
        label = w if w is not None else m
        labels.append(str(label))
        out_dir = root / Path(str(label)).name if (root is not None and several) else root
        jpath = None
        if json_path is not None:
            jpath = Path(json_path)
            if out_dir is not None and (several or not jpath.is_absolute()):
                jpath = out_dir / (jpath.name if several else jpath)
        h, wd = detector.input_hw
        print(
            f"val: {label} ({m if w is not None else 'exported'}) on {data} [{split}: {dataset.split_origin}], "
            f"{len(dataset)} images, {len(names)} classes; {wd}x{h} {detector.resize}, {postprocess.describe()}, "
            f"batch {batch}, {detector.device}"
            + (f" ({base.speed.describe()})" if base.network is not None else "")
            + (f"; {tile.describe()}" if tile is not None else "")
        )
        metrics = evaluate(detector, dataset, batch_size=batch, progress=progress, save_json=jpath, plots_dir=out_dir)
        table = metrics.table()
        print(table)
        print(metrics.summary())
        if out_dir is not None:
            (out_dir / "per_class.txt").write_text(metrics.summary() + "\n\n" + table + "\n")
            print(f"plots and per-class table in {out_dir}" + (f", COCO results in {jpath}" if jpath else ""))
        elif jpath is not None:
            print(f"COCO results in {jpath}")
        results.append(metrics)
    if several:
        print("\n" + comparison_table(labels, results))
    return results
