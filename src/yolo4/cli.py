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
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the cfg's width/height)")
    p.add_argument("--classes", type=int, default=80, help="number of classes for zoo models")
    p.add_argument("--peak-tflops", type=float, default=14.0,
                   help="device peak TFLOPS for darknet's FPS rule of thumb (default: V100 fp32, 14)")
    p.set_defaults(func=_run_info)


def _run_info(a: argparse.Namespace) -> int:
    from yolo4.models.summary import print_info

    print_info(a.model, img_size=a.img_size, num_classes=a.classes, peak_tflops=a.peak_tflops)
    return 0


# ---------------------------------------------------------------- detect
def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects in images, folders, globs, videos or a webcam")
    p.set_defaults(func=_not_yet("detect"))


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (the README's demo: yolo4 train --demo)")
    p.set_defaults(func=_not_yet("train"))


# ---------------------------------------------------------------- val
def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="COCO mAP of a model on a dataset")
    p.set_defaults(func=_not_yet("val"))


# ---------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX, TFLite or darknet")
    p.set_defaults(func=_not_yet("export"))


# ---------------------------------------------------------------- benchmark
def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measure a model's speed")
    p.set_defaults(func=_not_yet("benchmark"))


# ---------------------------------------------------------------- dataset
def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="check or draw a dataset, or write the embedded shapes dataset")
    p.set_defaults(func=_not_yet("dataset"))


def _not_yet(name: str):
    def run(a: argparse.Namespace) -> int:
        raise Yolo4Error(f"`yolo4 {name}` is not available in this build yet")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo4", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_info, _add_detect, _add_train, _add_val, _add_export, _add_benchmark, _add_dataset):
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
