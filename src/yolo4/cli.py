"""The `yolo4` command. Each subcommand parses its arguments and calls one function of the
public API (`yolo4.api`, the same names in Python); no logic lives here. Imports are lazy so
that `yolo4 --help` is instant. `VOCABULARY` (printed under `yolo4 --help`) is the one way
every subcommand names things; old spellings (--cfg, --save-dir, --save-json, export
--decode and a bare --nms, positional models and datasets, dataset check --plot) still work
for this release and print what to write instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from yolo4.errors import Yolo4Error
from yolo4.ops.nms_config import (
    DETECT_POSTPROCESS,
    LABEL_RULES,
    NMS_KINDS,
    TRACK_POSTPROCESS,
    VAL_POSTPROCESS,
    PostprocessConfig,
)

# What the choices are (no heavy imports here: tests check them against yolo4.export.common and
# yolo4.inference.preprocess).
FORMATS = ("onnx", "tflite", "openvino", "darknet")
OUTPUT_KINDS = ("heads", "decoded", "nms")
CALIB_METHODS = ("minmax", "percentile", "entropy")
INT8_TOOLS = ("auto", "nncf", "onnxruntime")
RESIZE_RULES = ("stretch", "letterbox")
TILE_MERGES = ("nmm", "nms")
RUNTIMES = ("auto", "pytorch", "onnxruntime", "openvino", "tflite", "opencv")

DESCRIPTION = "The YOLOv4 family of object detectors, darknet-compatible, in PyTorch. See `yolo4 COMMAND --help`."
VOCABULARY = """\
Every command names things the same way:
  --model M     a zoo name (yolov4, yolov4-tiny, ...), a darknet .cfg (with --weights), or an
                exported .onnx / .tflite (which carries its own cfg, names and pre-processing)
  --weights W   darknet .weights for a zoo name or .cfg
  --data DATA   a dataset: folder, data.yaml, darknet .data or COCO .json
  --device D    auto (CUDA when PyTorch sees a GPU, else CPU), cpu, cuda or cuda:N
  --runtime R   what runs the model: auto (the fastest installed for the file), pytorch, onnxruntime,
                openvino, tflite or opencv (detect, val, benchmark)
  --out PATH    where results go: a folder (detect, val, train, dataset shapes) or a file
                (export, dataset show, dataset check)
  --json FILE   the JSON results (detect: its detections; val: COCO-format results)
  --conf --iou --nms --labels --max-det
                post-processing; detect and val start from different defaults, as darknet
                draws boxes at conf 0.25 and scores mAP at conf 0.001
"""

MODEL_HELP = "zoo name (yolov4, yolov4-tiny, ...), darknet .cfg (with --weights), or exported .onnx / .tflite"
DARKNET_MODEL_HELP = "zoo name (yolov4, yolov4-tiny, yolov4-csp-leaky, ...) or darknet .cfg"
WEIGHTS_HELP = "darknet .weights (AlexeyAB/darknet releases, or yolo4 train's best.weights) for a zoo name or .cfg"
DATA_HELP = "dataset: a folder, data.yaml, darknet .data or COCO .json"
DEVICE_HELP = "auto (default: CUDA when PyTorch sees a GPU, else CPU), cpu, cuda or cuda:N"
RESIZE_HELP = "pre-processing (default: the cfg's letter_box key, else stretch; an export's own rule)"
RUNTIME_HELP = (
    "what runs the model: auto (default: pytorch for darknet models; for an exported file the fastest "
    "installed here, said on stderr), or pytorch, onnxruntime, openvino, tflite, opencv (.onnx: onnxruntime, "
    "openvino, opencv; .tflite: tflite; .xml: openvino)"
)


# ---------------------------------------------------------------- old spellings
def deprecated(old: str, new: str) -> None:
    """Tell the user an old spelling still works this release, and what to write instead."""
    print(f"warning: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)


class _OldSpelling(argparse.Action):
    """A hidden old spelling of an option: prints `deprecated`, then does what the new one does
    (stores its value, or `const` for a switch, into the new option's dest)."""

    def __init__(self, option_strings, dest, new: str, **kw):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kw)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(str(option_string), self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _old_option(group, flag: str, dest: str, new: str, **kw) -> None:
    group.add_argument(flag, dest=dest, action=_OldSpelling, new=new, **kw)


def _old_positional(a: argparse.Namespace, name: str, flag: str, command: str, metavar: str) -> None:
    """Move a hidden old positional argument (`yolo4 info yolov4`) onto its option (`--model`)."""
    old = getattr(a, f"old_{name}", None)
    if old is None:
        return
    if getattr(a, name) is not None:
        a.parser.error(f"{metavar} given twice: as {flag} and as a positional argument; give {flag} only")
    deprecated(f"'yolo4 {command} {metavar}'", f"'yolo4 {command} {flag} {metavar}'")
    setattr(a, name, old)


def _old_exported_weights(a: argparse.Namespace, many: bool) -> None:
    """`--weights FILE.onnx` (the old spelling): the exported file is the model."""
    weights = a.weights if many else ([a.weights] if a.weights else [])
    exported = [w for w in weights or [] if w.lower().endswith((".onnx", ".tflite"))]
    for w in exported:
        deprecated(f"--weights {w} (an exported file)", f"--model {w}")
    if not exported:
        return
    rest = [w for w in weights if w not in exported]
    if many:
        a.model, a.weights = [*(a.model or []), *exported], rest or None
    elif a.model is not None and not a.model.lower().endswith(".cfg"):
        a.parser.error(f"--model {a.model} and --weights {exported[0]}: give the exported file as --model only")
    else:
        a.model, a.weights = exported[0], None  # an old --cfg beside it was only needed before exports carried it


# ---------------------------------------------------------------- shared option groups
class _NmsKindOrOldSwitch(argparse.Action):
    """export's `--nms KIND` is the NMS kind, as everywhere; a bare `--nms` is the old switch
    for what is now `--outputs nms`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:
            deprecated("export --nms (without a kind)", "--outputs nms")
            namespace.outputs = "nms"
        else:
            namespace.nms = values


def _add_model(
    p: argparse.ArgumentParser, *, required: bool = False, darknet_only: bool = False, many: str | None = None
) -> None:
    """--model (and its old spelling --cfg); `many`: the help of a --model that takes several."""
    which = p.add_mutually_exclusive_group(required=required)
    if many:
        which.add_argument("--model", metavar="M", nargs="+", help=many)
        _old_option(which, "--cfg", "model", "--model", metavar="CFG", nargs=1)
    else:
        which.add_argument("--model", metavar="M", help=DARKNET_MODEL_HELP if darknet_only else MODEL_HELP)
        _old_option(which, "--cfg", "model", "--model", metavar="CFG")


def _add_required_model(p: argparse.ArgumentParser, help: str) -> None:
    """--model, required, or the old positional MODEL (`yolo4 info yolov4`); see `_required_model`."""
    p.add_argument("--model", metavar="M", help=help)
    p.add_argument("old_model", nargs="?", help=argparse.SUPPRESS)


def _required_model(a: argparse.Namespace, command: str) -> None:
    _old_positional(a, "model", "--model", command, "MODEL")
    if a.model is None:
        a.parser.error("the following arguments are required: --model")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="D", help=DEVICE_HELP)


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=RUNTIMES, default="auto", metavar="R", help=RUNTIME_HELP)


def _add_input(p: argparse.ArgumentParser, batch_default: int, batch_help: str) -> None:
    """The network input: --img-size, --resize, --device and --batch, as detect, track and val name them."""
    p.add_argument("--img-size", type=int, default=None, metavar="N", help="network input size (default: the cfg's)")
    p.add_argument("--resize", choices=RESIZE_RULES, default=None, help=RESIZE_HELP)
    _add_device(p)
    p.add_argument("--batch", type=int, default=batch_default, metavar="N", help=batch_help)


def _add_detector(p: argparse.ArgumentParser, batch_help: str) -> None:
    """What detect and track build their Detector from: --model, --weights, --names and the input options."""
    _add_model(p)
    p.add_argument("--weights", metavar="W", help=WEIGHTS_HELP)
    p.add_argument("--names", metavar="FILE", help="class names, one a line (default: the model's; COCO's for 80)")
    _add_input(p, 1, batch_help)


def _detector(a: argparse.Namespace) -> dict:
    """The keyword arguments of the api functions that build a Detector from `_add_detector`'s options."""
    return dict(
        model=a.model,
        weights=a.weights,
        names=a.names,
        img_size=a.img_size,
        resize=a.resize,
        postprocess=_postprocess(a),
        device=a.device,
    )


def _add_json(p: argparse.ArgumentParser, what: str, old: str | None = None) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", metavar="FILE", default=None, help=what)
    if old:
        _old_option(group, old, "json", "--json", metavar="FILE")


def _add_postprocess(p: argparse.ArgumentParser, preset: PostprocessConfig, why: str, in_graph: bool = False) -> None:
    g = p.add_argument_group("post-processing", f"defaults: {preset.describe()} ({why})")
    g.add_argument("--conf", type=float, default=preset.conf, metavar="C", help="keep detections with obj * cls > C")
    g.add_argument("--iou", type=float, default=preset.iou, metavar="T", help="NMS IoU threshold")
    if in_graph:  # export: a bare --nms is the old switch for --outputs nms
        g.add_argument(
            "--nms",
            choices=NMS_KINDS,
            default=preset.nms,
            nargs="?",
            const=None,
            action=_NmsKindOrOldSwitch,
            help="NMS kind of --outputs nms: greedy (ONNX NonMaxSuppression is per-class greedy)",
        )
    else:
        g.add_argument(
            "--nms",
            choices=NMS_KINDS,
            default=preset.nms,
            help="greedy: per class; agnostic: across classes; diou: DIoU-NMS with the cfg's beta_nms",
        )
    g.add_argument(
        "--labels",
        choices=LABEL_RULES,
        default=preset.labels,
        help="best: one class per box, as OpenCV; all: every class above --conf, as darknet",
    )
    g.add_argument("--max-det", type=int, default=preset.max_det, metavar="N", help="detections kept per image")


def _postprocess(a: argparse.Namespace) -> PostprocessConfig:
    return PostprocessConfig(conf=a.conf, iou=a.iou, nms=a.nms, labels=a.labels, max_det=a.max_det)


def _add_tiles(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tiles", "large images with small objects: detect on overlapping tiles, then merge")
    g.add_argument("--tile", type=int, default=None, metavar="N", help="tile side in image pixels (off by default)")
    g.add_argument("--tile-overlap", type=float, default=0.2, metavar="F", help="overlap of neighbouring tiles (0.2)")
    g.add_argument(
        "--tile-merge",
        choices=TILE_MERGES,
        default="nms",
        help="nms: IoU-NMS (default); nmm: merge boxes covering each other (intersection over smaller)",
    )
    g.add_argument(
        "--tile-merge-thresh", type=float, default=0.5, metavar="T", help="IoU (nms) or IoS (nmm, cut views)"
    )
    g.add_argument("--no-full-image", action="store_true", help="tiles only, without the whole-image pass")


def _tile(a: argparse.Namespace):
    if a.tile is None:
        return None
    from yolo4.inference.tiles import TileConfig

    return TileConfig(
        size=a.tile,
        overlap=a.tile_overlap,
        full_image=not a.no_full_image,
        merge=a.tile_merge,
        merge_threshold=a.tile_merge_thresh,
    )


def _add_out(p: argparse.ArgumentParser, default: str | None, what: str, old: str | None = None) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--out", default=default, metavar="PATH", help=what)
    if old:
        _old_option(group, old, "out", "--out", metavar="PATH")


def _add_data(p: argparse.ArgumentParser, command: str, *, required: bool) -> None:
    p.add_argument("--data", metavar="DATA", help=DATA_HELP + (" (required)" if required else ""))
    p.add_argument("old_data", nargs="?", help=argparse.SUPPRESS)
    p.set_defaults(data_required=required, data_command=command)


def _data(a: argparse.Namespace) -> None:
    _old_positional(a, "data", "--data", a.data_command, "DATA")
    if a.data is None and a.data_required:
        a.parser.error("the following arguments are required: --data")


# ---------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a model's darknet-style layer table, params and BFLOPs")
    _add_required_model(p, "zoo name (yolov4, yolov4-tiny, ...), darknet .cfg, or exported .onnx / .tflite (required)")
    p.add_argument(
        "--img-size", type=int, default=None, metavar="N", help="input size (default: the [net] width/height)"
    )
    p.add_argument(
        "--classes",
        type=int,
        default=None,
        metavar="N",
        help="number of classes (default: 80 for zoo models, a cfg's own)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        metavar="T",
        default=14.0,
        help="device peak TFLOPS for darknet's FPS rule of thumb (default: V100 fp32, 14)",
    )
    p.set_defaults(func=_run_info, parser=p)


def _run_info(a: argparse.Namespace) -> int:
    from yolo4.api import info

    _required_model(a, "info")
    info(a.model, img_size=a.img_size, num_classes=a.classes, peak_tflops=a.peak_tflops)
    return 0


# ---------------------------------------------------------------- detect
def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects in images, folders, globs, videos or a webcam")
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="image files, folders, globs ('imgs/*.jpg'), video files or a webcam index (0)",
    )
    _add_detector(p, "images or frames per forward pass (default 1)")
    _add_runtime(p)
    _add_out(
        p, "runs/detect", "folder for the annotated images/videos and the JSON (default runs/detect)", "--save-dir"
    )
    _add_json(p, "detections file (default detections.json; a relative path is inside --out)")
    _add_postprocess(p, DETECT_POSTPROCESS, "darknet's detector test and OpenCV's sample")
    _add_tiles(p)
    _add_speed(p)
    p.add_argument(
        "--no-pipeline",
        action="store_true",
        help="decode, pre-process, run the network and draw one after another instead of in parallel threads",
    )
    r = p.add_argument_group(
        "many machines (Ray Data; pip install 'yolo4[ray]')",
        "--ray writes Parquet shards (path, width, height, boxes, scores, class_ids, error) and summary.json "
        "into --out; a rerun skips the shards already written",
    )
    r.add_argument("--ray", action="store_true", help="run on Ray: a local instance, or the cluster of --ray-address")
    r.add_argument(
        "--ray-address", default=None, metavar="A", help="'auto' (this machine's cluster) or ray://HOST:PORT"
    )
    r.add_argument("--ray-workers", type=int, default=None, metavar="N", help="detector actors (default: one per GPU)")
    r.add_argument(
        "--ray-cpus-per-worker", type=int, default=None, metavar="N", help="cores per actor without GPU (default 2)"
    )
    r.add_argument("--shard-size", type=int, default=1000, metavar="N", help="images per Parquet shard (default 1000)")
    p.set_defaults(func=_run_detect, parser=p)


def _run_detect(a: argparse.Namespace) -> int:
    from yolo4.api import detect, detect_dataset

    _old_exported_weights(a, many=False)
    if a.ray:
        from yolo4.inference.cluster import RayConfig

        if a.runtime != "auto":
            a.parser.error("--runtime applies without --ray (Ray workers choose the fastest runtime themselves)")

        ray_config = RayConfig(
            address=a.ray_address,
            workers=a.ray_workers,
            cpus_per_worker=a.ray_cpus_per_worker,
            shard_size=a.shard_size,
            batch=max(a.batch, 1),
        )
        dataset_summary = detect_dataset(
            a.sources, **_detector(a), tile=_tile(a), out=a.out, ray_config=ray_config, speed=_speed(a)
        )
        return 0 if dataset_summary.detected else 1
    summary = detect(
        a.sources,
        **_detector(a),
        batch=a.batch,
        json_path=a.json,
        out=a.out,
        tile=_tile(a),
        pipeline=not a.no_pipeline,
        runtime=a.runtime,
        speed=_speed(a),
    )
    return 0 if summary.processed else 1


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (the README's demo: yolo4 train --demo)",
        description="Train with the YOLOv4 recipe. Under `torchrun --nproc_per_node N -m yolo4 "
        "train ...` it runs DistributedDataParallel (gloo on CPU, nccl on CUDA).",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="the main job: yolov4-tiny from scratch on the embedded shapes dataset, evaluated, with "
        "detections on held-out images, all in --out (default runs/demo); takes only --out, --device and "
        "--time-budget",
    )
    p.add_argument("--data", metavar="DATA", help=DATA_HELP)
    _add_start(p, "darknet .weights to start from (full model or backbone prefix)")
    p.add_argument("--freeze", type=int, metavar="N", help="do not train layers 0..N-1")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs (default 100)")
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        dest="time_budget_min",
        help="train for at most MIN minutes: the epochs that fit, warm-up and EMA planned for them (--demo: "
        "its budget on a CPU, 12.5 with native bf16 and 13.5 without by default)",
    )
    p.add_argument(
        "--batch", type=int, metavar="N", help="images per optimizer step over all processes (darknet batch; 64)"
    )
    p.add_argument("--subdivisions", type=int, metavar="N", help="mini-batches per step (gradient accumulation; 1)")
    p.add_argument("--img-size", type=int, metavar="N", help="training input size (default 416)")
    _add_device(p)
    p.add_argument("--workers", type=int, metavar="N", help="data loader processes per training process (default 2)")
    p.add_argument("--out", metavar="PATH", help="run folder (default runs/train; runs/demo with --demo)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its last.pt")
    p.add_argument(
        "--qat",
        action="store_true",
        help="quantisation-aware training: fine-tune the trained --weights (or a run's best.pt) with simulated "
        "int8 (lr 1e-5 per 64 images unless given; epoch 0 scores the calibrated start, best.pt keeps the best), "
        "then write int8 files (--set qat_export=onnx,openvino,tflite)",
    )
    _add_config_and_set(p)
    p.set_defaults(func=_run_train, parser=p)


def _add_start(p: argparse.ArgumentParser, weights_help: str) -> None:
    """What train and tune start from: --model (darknet), --weights and --weights-upto."""
    _add_model(p, darknet_only=True)
    p.add_argument("--weights", metavar="W", help=weights_help)
    p.add_argument("--weights-upto", type=int, metavar="N", help="load only layers 0..N-1 of --weights")


def _training(a: argparse.Namespace) -> dict:
    """The keyword arguments train and tune share: the recipe (--config, --set), the start and the input."""
    return dict(
        config=a.config,
        options=a.options,
        model=a.model,
        weights=a.weights,
        weights_upto=a.weights_upto,
        img_size=a.img_size,
        batch=a.batch,
        device=a.device,
        out=a.out,
    )


def _add_config_and_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML of TrainConfig fields (e.g. the best.yaml of yolo4 tune); --set and the options override it",
    )
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig field, e.g. --set lr=0.02 --set mosaic=0 --set policy=steps",
    )


def _run_train(a: argparse.Namespace) -> int:
    from yolo4.api import train

    result = train(
        a.data,
        demo=a.demo,
        **_training(a),
        freeze=a.freeze,
        epochs=a.epochs,
        time_budget_min=a.time_budget_min,
        subdivisions=a.subdivisions,
        workers=a.workers,
        resume=a.resume,
        qat=True if a.qat else None,
    )
    signum = getattr(result, "signal", None)
    return 128 + signum if signum else 0  # stopped by SIGTERM/SIGINT (checkpointed): the shell's convention


# ---------------------------------------------------------------- tune
def _add_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="evolve the training hyper-parameters on a dataset (genetic search; Ray Tune when installed)",
        description="A genetic search over TrainConfig fields (lr, momentum, warm-up, loss weights, "
        "thresholds, augmentation): each trial a short training scored by 0.1 mAP50 + 0.9 mAP50-95, "
        "bad trials stopped early (ASHA). Writes tune.csv, tune.png and best.yaml (for yolo4 train "
        "--config) in --out; the same command again resumes the search.",
    )
    p.add_argument("--data", metavar="DATA", required=True, help=DATA_HELP)
    _add_start(p, "darknet .weights every trial starts from")
    p.add_argument("--trials", type=int, metavar="N", help="trials in all, counting finished ones (default 30)")
    p.add_argument("--epochs-per-trial", type=int, metavar="E", help="epochs of each trial (default 10)")
    p.add_argument(
        "--time-budget", type=float, metavar="MIN", help="minutes of this session: no trial starts after them"
    )
    p.add_argument("--space", metavar="FILE", help="YAML of fields and ranges to evolve (default: the built-in space)")
    p.add_argument("--img-size", type=int, metavar="N", help="training input size of the trials")
    p.add_argument("--batch", type=int, metavar="N", help="images per optimizer step")
    _add_device(p)
    p.add_argument("--out", metavar="PATH", help="search folder (default runs/tune)")
    p.add_argument(
        "--backend", choices=("auto", "ray", "local"), help="auto (default: Ray Tune when installed), ray, or local"
    )
    p.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (default: a local Ray instance)")
    p.add_argument("--cpus-per-trial", type=int, metavar="N", help="Ray: cores (torch threads) per trial (1)")
    p.add_argument("--no-prune", action="store_true", help="run every trial to the end (no ASHA early stopping)")
    _add_config_and_set(p)
    p.set_defaults(func=_run_tune, parser=p)


def _run_tune(a: argparse.Namespace) -> int:
    from yolo4.api import tune

    tune(
        a.data,
        **_training(a),
        trials=a.trials,
        epochs_per_trial=a.epochs_per_trial,
        budget_min=a.time_budget,
        space=a.space,
        backend=a.backend,
        ray_address=a.ray_address,
        cpus_per_trial=a.cpus_per_trial,
        prune=False if a.no_prune else None,
    )
    return 0


# ---------------------------------------------------------------- anchors
def _add_anchors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anchors",
        help="how a model's anchors fit a dataset's boxes, and k-means anchors as a cfg line",
        description="Mean IoU and best possible recall of the model's anchors and of IoU k-means anchors on the "
        "training boxes at the training size (what `yolo4 train --set anchors=auto` checks at its start).",
    )
    p.add_argument("--data", metavar="DATA", required=True, help=DATA_HELP)
    p.add_argument("--model", metavar="M", default="yolov4-tiny", help=DARKNET_MODEL_HELP + " (default yolov4-tiny)")
    p.add_argument("--img-size", type=int, default=416, help="training input size (default 416)")
    p.set_defaults(func=_run_anchors)


def _run_anchors(a: argparse.Namespace) -> int:
    from yolo4.api import anchors

    anchors(a.data, model=a.model, img_size=a.img_size)
    return 0


# ---------------------------------------------------------------- val
def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="COCO mAP (and darknet's mAP@0.5) of one or more models on a dataset")
    p.add_argument("--data", metavar="DATA", required=True, help=DATA_HELP)
    p.add_argument(
        "--split",
        default=None,
        choices=("train", "val", "all"),
        help="default: val of a source with a split (or whose 90/10 split a training wrote down), "
        "else all: every image",
    )
    _add_model(p, many=MODEL_HELP + "; several are scored on the same images and compared in one table")
    p.add_argument(
        "--weights",
        metavar="W",
        nargs="+",
        help="darknet .weights for a zoo name or .cfg; several (of one --model) are compared in one table",
    )
    _add_input(p, 16, "images per forward pass (default 16)")
    _add_runtime(p)
    _add_out(
        p, "runs/val", "folder for the PR curves, confusion matrix and per-class table (default runs/val)", "--save-dir"
    )
    _add_json(p, "COCO-format results file (a relative path is inside --out)", "--save-json")
    _add_postprocess(p, VAL_POSTPROCESS, "darknet's map: a low threshold and every class, as mAP needs")
    _add_tiles(p)
    _add_speed(p)
    p.set_defaults(func=_run_val, parser=p)


def _run_val(a: argparse.Namespace) -> int:
    from yolo4.api import val

    _old_exported_weights(a, many=True)
    val(
        a.data,
        split=a.split,
        model=a.model,
        weights=a.weights,
        img_size=a.img_size,
        batch=a.batch,
        resize=a.resize,
        postprocess=_postprocess(a),
        device=a.device,
        json_path=a.json,
        out=a.out,
        tile=_tile(a),
        runtime=a.runtime,
        speed=_speed(a),
    )
    return 0


# ---------------------------------------------------------------- track
def _add_track(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track",
        help="track objects through a video or camera with ByteTrack: ids, trails, MOT text and JSON",
        description="Detect on every frame and give each object a persistent id (ByteTrack). Writes into "
        "--out: <name>.mp4 with ids and trails drawn, <name>.txt in MOTChallenge format "
        "(frame,id,left,top,width,height,score,-1,-1,-1) and <name>.jsonl (one JSON record per frame).",
    )
    p.add_argument("source", metavar="SOURCE", help="a video file or a webcam index (0)")
    _add_detector(p, "frames per forward pass (default 1)")
    _add_out(p, "runs/track", "folder for the video, MOT text and JSON lines (default runs/track)")
    _add_postprocess(p, TRACK_POSTPROCESS, "low, so that ByteTrack's second association sees weak boxes")
    _add_speed(p)
    t = p.add_argument_group("ByteTrack", "defaults: the paper's")
    t.add_argument("--track-high", type=float, default=0.5, metavar="S", help="first-association score (0.5)")
    t.add_argument("--track-low", type=float, default=0.1, metavar="S", help="second-association score (0.1)")
    t.add_argument("--track-new", type=float, default=0.6, metavar="S", help="score that starts a track (0.6)")
    t.add_argument("--track-match", type=float, default=0.8, metavar="D", help="largest 1 - IoU matched first (0.8)")
    t.add_argument("--track-buffer", type=int, default=30, metavar="N", help="frames a lost track is kept (30)")
    p.add_argument("--no-pipeline", action="store_true", help="run the stages one after another (no threads)")
    p.set_defaults(func=_run_track, parser=p)


def _run_track(a: argparse.Namespace) -> int:
    from yolo4.api import track
    from yolo4.inference.track import TrackConfig

    config = TrackConfig(
        high_thresh=a.track_high,
        low_thresh=a.track_low,
        new_track_thresh=a.track_new,
        match_thresh=a.track_match,
        track_buffer=a.track_buffer,
    )
    track(
        a.source,
        **_detector(a),
        config=config,
        batch=a.batch,
        out=a.out,
        pipeline=not a.no_pipeline,
        speed=_speed(a),
    )
    return 0


# ---------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX, TFLite or darknet (float32 or int8)")
    _add_model(p, required=True, darknet_only=True)
    p.add_argument("--weights", metavar="W", required=True, help="darknet .weights to export")
    p.add_argument(
        "--classes", type=int, default=None, metavar="N", help="number of classes (default: the cfg's; zoo models 80)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (default), tflite, openvino (.xml + .bin) or darknet (.cfg + .weights)",
    )
    outputs = p.add_mutually_exclusive_group()
    outputs.add_argument(
        "--outputs",
        choices=OUTPUT_KINDS,
        default="heads",
        help="what the graph returns: heads (raw [yolo] tensors, for NPU toolchains; default), decoded "
        "(boxes (B,N,4) xyxy and scores (B,N,C), separate tensors), nms (decoded, then ONNX "
        "NonMaxSuppression with the post-processing options; ONNX only)",
    )
    _old_option(outputs, "--decode", "outputs", "--outputs decoded", nargs=0, const="decoded")
    p.add_argument(
        "--img-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="exported input: N (square) or H W (default: the cfg's)",
    )
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, metavar="N", help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis (ONNX only)")
    p.add_argument("--int8", action="store_true", help="int8 post-training quantisation (needs --calib)")
    p.add_argument(
        "--calib", metavar="DATA", help="calibration images: a dataset (its --calib-split) or an image folder"
    )
    p.add_argument("--calib-count", type=int, default=100, metavar="N", help="calibration images (default 100)")
    p.add_argument(
        "--calib-split", default="train", metavar="SPLIT", help="dataset split to calibrate on (default train)"
    )
    p.add_argument(
        "--calib-method",
        choices=CALIB_METHODS,
        default="percentile",
        help="onnxruntime int8 activation ranges (default percentile, the 99.999th)",
    )
    p.add_argument(
        "--int8-tool",
        choices=INT8_TOOLS,
        default="auto",
        help="ONNX/OpenVINO int8 quantiser: nncf (bias correction, asymmetric activations), onnxruntime, "
        "or auto (nncf when installed; default); TFLite: nncf/auto take NNCF's activation ranges, "
        "onnxruntime leaves PT2E's own",
    )
    p.add_argument(
        "--int8-keep-float",
        type=int,
        nargs="+",
        default=(),
        metavar="LAYER",
        help="cfg layer indices kept in float (mixed precision; see --analyse for the ranking)",
    )
    p.add_argument(
        "--int8-weight-bits",
        type=int,
        choices=(7, 8),
        default=7,
        help="ONNX/OpenVINO int8 weights' range: 7 (default; CPUs without VNNI do not saturate) or 8 (the "
        "whole range, ~0.5 dB better on VNNI/AMX CPUs and NPUs); TFLite always uses 8",
    )
    p.add_argument(
        "--int8-min-agreement",
        type=float,
        default=None,
        metavar="SHARE",
        help="keep the most int8-sensitive layers float until simulated int8 keeps this share of float32's "
        "detections on the calibration images (e.g. 0.95)",
    )
    p.add_argument(
        "--int8-max-float", type=int, default=8, metavar="N", help="at most this many float layers (default 8)"
    )
    p.add_argument(
        "--analyse",
        action="store_true",
        help="print the per-layer int8 sensitivity ranking and plot it beside the output",
    )
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default 17, 18 with Mish)")
    p.add_argument(
        "--names", metavar="FILE", help="class names stored in the file's metadata (default COCO's / numbers)"
    )
    p.add_argument("--out", metavar="PATH", help="output file (default: beside the weights, named after the options)")
    p.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    _add_postprocess(p, DETECT_POSTPROCESS, "used by --outputs nms; max-det counts per class there", in_graph=True)
    p.set_defaults(func=_run_export, parser=p)


def _run_export(a: argparse.Namespace) -> int:
    from yolo4.api import ExportOptions, export

    if a.img_size is not None and len(a.img_size) > 2:
        a.parser.error(f"--img-size takes N or H W, got {len(a.img_size)} numbers")
    size = None if a.img_size is None else (a.img_size[0], a.img_size[-1])
    options = ExportOptions(
        format=a.format,
        img_size=size,
        batch=a.batch,
        dynamic_batch=a.dynamic_batch,
        outputs=a.outputs,
        postprocess=_postprocess(a),
        int8=a.int8,
        calib=a.calib,
        calib_count=a.calib_count,
        calib_split=a.calib_split,
        calib_method=a.calib_method,
        int8_tool=a.int8_tool,
        int8_keep_float=tuple(a.int8_keep_float),
        int8_weight_bits=a.int8_weight_bits,
        int8_min_agreement=a.int8_min_agreement,
        int8_max_float=a.int8_max_float,
        analyse=a.analyse,
        opset=a.opset,
        out=a.out,
        check=not a.no_check,
    )
    export(a.model, a.weights, options, names=a.names, num_classes=a.classes)
    return 0


# ---------------------------------------------------------------- speed (detect, val, benchmark)
def _add_speed(p: argparse.ArgumentParser) -> None:
    from yolo4.inference.speed import COMPILE_MODES

    g = p.add_argument_group(
        "speed",
        "how the network runs (default: BatchNorm folded, channels_last; on CUDA also fp16 and compiled; on a "
        "CPU fp32 and eager, the same detections as plain PyTorch)",
    )
    g.add_argument(
        "--half",
        action="store_true",
        help="half-precision weights and activations: fp16 on CUDA, bf16 on a CPU with native bf16 (AVX-512 BF16 "
        "or AMX: 2-5x faster there, detections within about half a point of mAP50 of fp32's)",
    )
    g.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help=f"torch.compile the network: {', '.join(COMPILE_MODES)} (bare --compile: default; the first call "
        "compiles, 10-20 s on 2 cores, cached for later runs)",
    )
    g.add_argument("--no-fuse", action="store_true", help="keep BatchNorm separate from convolutions")
    g.add_argument("--eager", action="store_true", help="start from plain PyTorch (fp32, eager, nothing folded)")


def _speed(a: argparse.Namespace):
    """The SpeedConfig of --half/--compile/--no-fuse/--eager; None (the device's default) without them."""
    if not (a.half or a.compile or a.no_fuse or a.eager):
        return None
    from yolo4.inference.device import select_device
    from yolo4.inference.fastpath import EAGER, SpeedConfig

    device = select_device(a.device)
    base = EAGER if a.eager else SpeedConfig.for_device(device)
    return base.with_flags(half=a.half, compile=a.compile, fuse=not a.no_fuse, device=device)


# ---------------------------------------------------------------- benchmark
def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measure a model's speed (ms/img, FPS with and without post-processing)")
    _add_required_model(p, MODEL_HELP + " (timed in its runtime on the CPU; required)")
    p.add_argument(
        "--weights", metavar="W", default=None, help="darknet .weights (random weights time the network, not NMS)"
    )
    p.add_argument("--img-size", type=int, default=None, metavar="N", help="input size (default: the cfg's)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per forward pass (default 1)")
    _add_device(p)
    _add_runtime(p)
    p.add_argument(
        "--iters", type=int, default=20, metavar="N", help="timed passes (default 20; the median is reported)"
    )
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed passes first (default 3)")
    _add_speed(p)
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        metavar="T",
        help="print darknet's rule-of-thumb FPS for a device of this peak",
    )
    _add_postprocess(p, DETECT_POSTPROCESS, "as yolo4 detect")
    p.add_argument(
        "--backends",
        default=None,
        metavar="LIST",
        help="compare CPU back-ends side by side instead: 'all' or a comma list of pytorch, pytorch-bf16, onnxruntime, "
        "onnxruntime-int8, openvino, openvino-int8, tflite, tflite-int8, opencv-darknet",
    )
    p.add_argument(
        "--threads", type=int, nargs="+", default=None, help="--backends: thread counts (default 1 and all cores)"
    )
    p.add_argument("--calib", metavar="DATA", help="--backends: int8 calibration images (default: random, timing only)")
    p.set_defaults(func=_run_benchmark, parser=p)


def _run_benchmark(a: argparse.Namespace) -> int:
    from yolo4.api import benchmark

    _required_model(a, "benchmark")
    if a.backends:
        if a.runtime != "auto":
            a.parser.error("--runtime and --backends: --backends times every runtime side by side")
        from yolo4.export.backends import BACKENDS, backends_table, compare_backends
        from yolo4.inference.device import cpu_description

        names = BACKENDS if a.backends == "all" else tuple(b.strip() for b in a.backends.split(",") if b.strip())
        rows = compare_backends(
            a.model, a.weights, a.img_size, a.batch, names, a.threads, a.calib, repeats=a.iters, warmup=a.warmup
        )
        print(f"{a.model}, batch {a.batch}, CPU: {cpu_description()}")
        print(backends_table(rows))
        return 0
    r = benchmark(
        a.model,
        a.weights,
        img_size=a.img_size,
        batch=a.batch,
        device=a.device,
        iters=a.iters,
        warmup=a.warmup,
        speed=_speed(a),
        postprocess=_postprocess(a),
        runtime=a.runtime,
    )
    print(r.summary())
    if a.peak_tflops:
        print(f"darknet's rule of thumb at {a.peak_tflops} TFLOPS peak: {r.rule_of_thumb_fps(a.peak_tflops):.1f} FPS")
    return 0


# ---------------------------------------------------------------- dataset
def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="check or draw a dataset, or write the embedded shapes dataset")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    c = dsub.add_parser("check", help="counts per class, box-size histogram and every problem, by file")
    _add_data(c, "dataset check", required=True)
    c.add_argument("--split", default="all", choices=("train", "val", "all"), help="which split (default all)")
    _add_out(c, None, "also draw the counts to this PNG", "--plot")
    c.add_argument(
        "--fast", action="store_true", help="read image headers only (very large sets); default: decode every image"
    )
    c.add_argument(
        "--workers", type=int, default=None, metavar="N", help="decoding threads (default: the CPU count, at most 8)"
    )
    c.set_defaults(func=_run_dataset_check, parser=c)
    s = dsub.add_parser("show", help="draw a grid of samples with their boxes")
    _add_data(s, "dataset show", required=True)
    s.add_argument("--out", required=True, metavar="PATH", help="image to write (.jpg or .png)")
    s.add_argument("--split", default="train", choices=("train", "val", "all"), help="which split (default train)")
    s.add_argument("--count", type=int, default=16, metavar="N", help="number of samples (default 16)")
    s.add_argument("--augment", action="store_true", help="show samples as training augments them (Mosaic, ...)")
    s.add_argument("--img-size", type=int, default=416, metavar="N", help="network input size (default 416)")
    s.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    s.set_defaults(func=_run_dataset_show, parser=s)
    m = dsub.add_parser("shapes", help="write the embedded procedural `shapes` dataset (YOLO txt + data.yaml)")
    m.add_argument("--out", metavar="PATH", help="folder to write it to (required)")
    m.add_argument("old_out", nargs="?", help=argparse.SUPPRESS)
    m.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    m.add_argument("--num-train", type=int, default=None, metavar="N", help="training images (default 3000)")
    m.add_argument("--num-val", type=int, default=None, metavar="N", help="validation images (default 300)")
    m.add_argument("--img-size", type=int, default=None, metavar="N", help="image side (default 256)")
    m.set_defaults(func=_run_dataset_shapes, parser=m)


def _run_dataset_check(a: argparse.Namespace) -> int:
    from yolo4.data.report import check_dataset

    _data(a)
    return check_dataset(a.data, a.split, plot=a.out, fast=a.fast, workers=a.workers)


def _run_dataset_show(a: argparse.Namespace) -> int:
    from yolo4.data.report import show_dataset

    _data(a)
    print(show_dataset(a.data, a.out, a.split, a.count, a.augment, a.img_size, a.seed))
    return 0


def _run_dataset_shapes(a: argparse.Namespace) -> int:
    from yolo4.data.shapes import make_shapes_from_args

    _old_positional(a, "out", "--out", "dataset shapes", "PATH")
    if a.out is None:
        a.parser.error("the following arguments are required: --out")
    print(make_shapes_from_args(a.out, seed=a.seed, num_train=a.num_train, num_val=a.num_val, img_size=a.img_size))
    return 0


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_info,
    _add_detect,
    _add_track,
    _add_train,
    _add_anchors,
    _add_tune,
    _add_val,
    _add_export,
    _add_benchmark,
    _add_dataset,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolo4",
        description=DESCRIPTION,
        epilog=VOCABULARY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Yolo4Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
