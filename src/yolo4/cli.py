"""The `yolo4` command. Each subcommand parses its arguments and calls one library
function; no logic lives here. Imports are lazy so that `yolo4 --help` is instant."""

from __future__ import annotations

import argparse
import sys

from yolo4.errors import Yolo4Error


# ---------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a model's darknet-style layer table, params and BFLOPs")
    p.add_argument("model", help="zoo name (yolov4, yolov4-tiny, ...) or a darknet .cfg path")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the [net] width/height)")
    p.add_argument(
        "--classes",
        type=int,
        default=None,
        help="number of classes (default: 80 for zoo models, a cfg's own for a cfg)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=14.0,
        help="device peak TFLOPS for darknet's FPS rule of thumb (default: V100 fp32, 14)",
    )
    p.set_defaults(func=_run_info)


def _run_info(a: argparse.Namespace) -> int:
    from yolo4.models.summary import print_info

    print_info(a.model, img_size=a.img_size, num_classes=a.classes, peak_tflops=a.peak_tflops)
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
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME", help="zoo model name (yolov4, yolov4-tiny, ...)")
    which.add_argument("--cfg", metavar="CFG", help="darknet .cfg file (not needed for .onnx / .tflite files)")
    p.add_argument(
        "--weights",
        metavar="W",
        help="darknet .weights (AlexeyAB/darknet releases, or yolo4 train's best.weights), "
        "or an exported .onnx / .tflite file",
    )
    p.add_argument("--names", metavar="FILE", help="class names, one a line (default: COCO's for 80 classes)")
    p.add_argument("--img-size", type=int, default=None, help="network input size (default: the cfg's)")
    p.add_argument(
        "--resize",
        choices=("stretch", "letterbox"),
        default=None,
        help="pre-processing (default: the cfg's letter_box key, else stretch)",
    )
    p.add_argument("--conf", type=float, default=0.25, help="keep detections with obj*cls > CONF (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument(
        "--nms",
        choices=("greedy", "agnostic", "diou"),
        default="greedy",
        help="greedy: per class (default); agnostic: across classes; diou: DIoU-NMS with the cfg's beta_nms",
    )
    p.add_argument(
        "--labels",
        choices=("best", "all"),
        default="best",
        help="best: one class per box, as OpenCV (default); all: every class above --conf, as darknet",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch", type=int, default=1, help="images or frames per forward pass (default 1)")
    p.add_argument(
        "--json",
        metavar="OUT",
        default=None,
        help="JSON results file (default detections.json; relative paths are inside --save-dir)",
    )
    p.add_argument("--save-dir", default="runs/detect", help="where annotated images/videos and JSON go")
    p.set_defaults(func=_run_detect)


def _run_detect(a: argparse.Namespace) -> int:
    from yolo4.inference.detect import run_detect

    summary = run_detect(
        a.sources,
        model=a.cfg or a.model,
        weights=a.weights,
        names=a.names,
        img_size=a.img_size,
        resize=a.resize,
        conf=a.conf,
        iou=a.iou,
        nms=a.nms,
        labels=a.labels,
        device=a.device,
        batch=a.batch,
        json_path=a.json,
        save_dir=a.save_dir,
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
        "detections on held-out images, all in --out (default runs/demo)",
    )
    p.add_argument("--data", help="dataset: folder, data.yaml, darknet .data or COCO .json")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME", help="zoo model name (default yolov4-tiny)")
    which.add_argument("--cfg", metavar="CFG", help="darknet .cfg file")
    p.add_argument("--weights", metavar="W", help="darknet .weights to start from (full model or backbone prefix)")
    p.add_argument("--weights-upto", type=int, metavar="N", help="load only layers 0..N-1 of --weights")
    p.add_argument("--freeze", type=int, metavar="N", help="do not train layers 0..N-1")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int, help="images per optimizer step over all processes (darknet batch)")
    p.add_argument("--subdivisions", type=int, help="mini-batches per step (gradient accumulation)")
    p.add_argument("--img-size", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="data loader processes per training process")
    p.add_argument("--out", help="run folder (default runs/train, runs/demo with --demo)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its last.pt")
    p.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig field, e.g. --set lr=0.02 --set mosaic=0 --set policy=steps",
    )
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> int:
    from yolo4.training.run import run_train

    run_train(
        demo=a.demo,
        data=a.data,
        model=a.cfg or a.model,
        weights=a.weights,
        weights_upto=a.weights_upto,
        freeze=a.freeze,
        epochs=a.epochs,
        batch=a.batch,
        subdivisions=a.subdivisions,
        img_size=a.img_size,
        device=a.device,
        workers=a.workers,
        out=a.out,
        resume=a.resume,
        options=a.options,
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
    p.add_argument("--data", required=True, help="dataset: folder, data.yaml, darknet .data or COCO .json")
    p.add_argument(
        "--model", default="yolov4-tiny", metavar="NAME", help="zoo name or darknet .cfg (default yolov4-tiny)"
    )
    p.add_argument("--img-size", type=int, default=416, help="training input size (default 416)")
    p.set_defaults(func=_run_anchors)


def _run_anchors(a: argparse.Namespace) -> int:
    from yolo4.training.anchors import run_anchors

    run_anchors(a.data, a.model, a.img_size)
    return 0


# ---------------------------------------------------------------- val
def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="COCO mAP of a model on a dataset")
    p.add_argument("--data", required=True, help="dataset: a data.yaml, a COCO json, ... (as `yolo4 train`)")
    p.add_argument("--split", default="val", help="which split to evaluate on (default val)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME", help="zoo model name (yolov4, yolov4-tiny, ...)")
    which.add_argument("--cfg", metavar="CFG", help="darknet .cfg file (not needed for .onnx / .tflite files)")
    p.add_argument(
        "--weights",
        metavar="W",
        nargs="+",
        help="darknet .weights, or exported .onnx / .tflite files; several are compared in one table",
    )
    p.add_argument("--img-size", type=int, default=None, help="network input size (default: the cfg's)")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument(
        "--resize",
        choices=("stretch", "letterbox"),
        default=None,
        help="pre-processing (default: the cfg's letter_box key, else stretch)",
    )
    p.add_argument("--conf", type=float, default=0.001, help="score threshold (default 0.001, as for mAP)")
    p.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold (default 0.6)")
    p.add_argument(
        "--nms", choices=("greedy", "agnostic", "diou"), default="greedy", help="NMS variant (default greedy)"
    )
    p.add_argument(
        "--labels",
        choices=("best", "all"),
        default="all",
        help="all: every class above --conf per box, as darknet's map (default); best: one class per box",
    )
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image (default 300; COCO scores 100)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--save-json",
        metavar="PREDS.json",
        default=None,
        help="write COCO-format results (relative paths are inside --save-dir)",
    )
    p.add_argument("--save-dir", default="runs/val", help="where the PR curves, confusion matrix and table go")
    p.set_defaults(func=_run_val)


def _run_val(a: argparse.Namespace) -> int:
    from yolo4.evaluation.evaluate import run_val

    run_val(
        a.data,
        split=a.split,
        model=a.cfg or a.model,
        weights=a.weights,
        img_size=a.img_size,
        batch=a.batch,
        resize=a.resize,
        conf=a.conf,
        iou=a.iou,
        nms=a.nms,
        labels=a.labels,
        max_det=a.max_det,
        device=a.device,
        save_json=a.save_json,
        save_dir=a.save_dir,
    )
    return 0


# ---------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX, TFLite or darknet (float32 or int8)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="NAME", help="zoo model name (yolov4, yolov4-tiny, yolov4-csp-leaky, ...)")
    which.add_argument("--cfg", metavar="CFG", help="darknet .cfg file")
    p.add_argument("--weights", metavar="W", required=True, help="darknet .weights to export")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the cfg's; zoo models 80)")
    p.add_argument("--format", default="onnx", help="onnx (default), tflite or darknet (.cfg + .weights)")
    p.add_argument(
        "--img-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="exported input: N (square) or H W (default: the cfg's)",
    )
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis (ONNX only)")
    p.add_argument(
        "--decode", action="store_true", help="end with decoded boxes (B,N,4) xyxy and scores (B,N,C), separate tensors"
    )
    p.add_argument("--nms", action="store_true", help="end with ONNX NonMaxSuppression (ONNX only; implies --decode)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold inside the NMS graph (default 0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="IoU threshold inside the NMS graph (default 0.45)")
    p.add_argument("--max-det", type=int, default=300, help="boxes kept per class inside the NMS graph (default 300)")
    p.add_argument(
        "--labels",
        choices=("best", "all"),
        default="best",
        help="NMS graph: one class per box (best, as yolo4 detect) or every class above --conf (all)",
    )
    p.add_argument("--int8", action="store_true", help="int8 post-training quantisation (needs --calib)")
    p.add_argument(
        "--calib", metavar="DATA", help="calibration images: a dataset (its --calib-split) or an image folder"
    )
    p.add_argument("--calib-count", type=int, default=100, help="calibration images (default 100)")
    p.add_argument("--calib-split", default="train", help="dataset split to calibrate on (default train)")
    p.add_argument(
        "--calib-method",
        choices=("minmax", "percentile", "entropy"),
        default="percentile",
        help="ONNX int8 activation ranges (default percentile, the 99.999th)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, 18 with Mish)")
    p.add_argument(
        "--names", metavar="FILE", help="class names stored in the file's metadata (default COCO's / numbers)"
    )
    p.add_argument("--out", metavar="FILE", help="output file (default: beside the weights, named after the options)")
    p.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    p.set_defaults(func=_run_export)


def _run_export(a: argparse.Namespace) -> int:
    from yolo4.export import ExportOptions, run_export

    size = None if a.img_size is None else (a.img_size[0], a.img_size[-1])
    options = ExportOptions(
        format=a.format,
        img_size=size,
        batch=a.batch,
        dynamic_batch=a.dynamic_batch,
        decode=a.decode,
        nms=a.nms,
        int8=a.int8,
        calib=a.calib,
        calib_count=a.calib_count,
        calib_split=a.calib_split,
        calib_method=a.calib_method,
        opset=a.opset,
        conf=a.conf,
        iou=a.iou,
        max_det=a.max_det,
        labels=a.labels,
        out=a.out,
        check=not a.no_check,
    )
    run_export(a.cfg or a.model, a.weights, options, names=a.names, num_classes=a.classes)
    return 0


# ---------------------------------------------------------------- benchmark
def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measure a model's speed (ms/img, FPS with and without post-processing)")
    p.add_argument("model", help="zoo name or darknet .cfg path")
    p.add_argument(
        "--weights", default=None, help="darknet .weights (random weights time the network fairly, but not NMS)"
    )
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--half", action="store_true", help="fp16 (CUDA only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm separate from convolutions")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="print darknet's rule-of-thumb FPS for a device of this peak"
    )
    p.set_defaults(func=_run_benchmark)


def _run_benchmark(a: argparse.Namespace) -> int:
    from yolo4.inference.benchmark import benchmark

    r = benchmark(
        a.model,
        a.weights,
        img_size=a.img_size,
        batch=a.batch,
        device=a.device,
        iters=a.iters,
        warmup=a.warmup,
        half=a.half,
        fuse=not a.no_fuse,
        compile=a.compile,
    )
    print(r.summary())
    if a.peak_tflops:
        print(f"darknet's rule of thumb at {a.peak_tflops} TFLOPS peak: {r.rule_of_thumb_fps(a.peak_tflops):.1f} FPS")
    return 0


# ---------------------------------------------------------------- dataset
def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="check or draw a dataset, or write the embedded shapes dataset")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    data_help = "a dataset folder, data.yaml, darknet .data or COCO .json"
    c = dsub.add_parser("check", help="counts per class, box-size histogram and every problem, by file")
    c.add_argument("data", help=data_help)
    c.add_argument("--split", default="all", choices=("train", "val", "all"))
    c.add_argument("--plot", default=None, help="also draw the counts to this PNG")
    c.set_defaults(func=_run_dataset_check)
    s = dsub.add_parser("show", help="draw a grid of samples with their boxes")
    s.add_argument("data", help=data_help)
    s.add_argument("--out", required=True, help="image to write (.jpg or .png)")
    s.add_argument("--split", default="train", choices=("train", "val", "all"))
    s.add_argument("--count", type=int, default=16, help="number of samples")
    s.add_argument("--augment", action="store_true", help="show samples as training augments them (Mosaic, ...)")
    s.add_argument("--img-size", type=int, default=416, help="network input size")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_run_dataset_show)
    m = dsub.add_parser("shapes", help="write the embedded procedural `shapes` dataset (YOLO txt + data.yaml)")
    m.add_argument("out_dir")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--num-train", type=int, default=None, help="training images (default 3000)")
    m.add_argument("--num-val", type=int, default=None, help="validation images (default 300)")
    m.add_argument("--img-size", type=int, default=None, help="image side (default 256)")
    m.set_defaults(func=_run_dataset_shapes)


def _run_dataset_check(a: argparse.Namespace) -> int:
    from yolo4.data.report import check_dataset

    return check_dataset(a.data, a.split, plot=a.plot)


def _run_dataset_show(a: argparse.Namespace) -> int:
    from yolo4.data.report import show_dataset

    print(show_dataset(a.data, a.out, a.split, a.count, a.augment, a.img_size, a.seed))
    return 0


def _run_dataset_shapes(a: argparse.Namespace) -> int:
    from yolo4.data.shapes import make_shapes_from_args

    print(make_shapes_from_args(a.out_dir, seed=a.seed, num_train=a.num_train, num_val=a.num_val, img_size=a.img_size))
    return 0


def _not_yet(name: str):
    def run(a: argparse.Namespace) -> int:
        raise Yolo4Error(f"`yolo4 {name}` is not available in this build yet")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo4", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_info, _add_detect, _add_train, _add_anchors, _add_val, _add_export, _add_benchmark, _add_dataset):
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
