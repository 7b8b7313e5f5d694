"""int8 on a model trained on real photos: every post-training recipe against quantisation-aware
training, scored against the ground truth of the val split.

    python benchmarks/bench_qat.py --cfg best.cfg --weights best.weights --data ../shared/datasets/kangaroo
    python benchmarks/bench_qat.py --checkpoint runs/train/best.pt --data ../shared/datasets/kangaroo

1. The float model (darknet cfg + weights, or a run's best.pt) is scored on the val split
   (COCO mAP50 and mAP50-95, `yolo4 val`'s post-processing: conf 0.001, NMS 0.6).
2. Post-training int8 (calibrated on `--calib-count` train images): onnxruntime percentile,
   NNCF, NNCF + float layers chosen by the sensitivity analysis, OpenVINO int8 (NNCF), TFLite
   PT2E int8 (`bench_export.RECIPES` rows; `--ptq` chooses some), each scored the same way.
3. Quantisation-aware training: `yolo4 train --qat` from the same model, once per `--qat-recipe`
   (train settings such as `epochs=3,lr=0.0001`; the default: `epochs=1` and `--qat`'s own lr),
   then its int8 files (ONNX in onnxruntime, OpenVINO IR, and TFLite: the QAT weights quantised
   by PT2E with the ranges and biases QAT trained, and beside it with every range calibrated
   anew) scored the same way. A QAT run validates its calibrated model before the first step
   (epoch 0, the PTQ point) and best.pt keeps the best of it and the trained epochs: the row
   says which epoch the int8 files come from.

Every figure is on one small val split: with ~50 boxes one box moves mAP50 by ~2 points, so
each int8 row carries the 95% interval of its ΔmAP50 (paired bootstrap over the val images) and
the heads' SQNR against fp32 on the same images, which has no box noise.

Writes `<out>/qat_table_<name>.md` and `<out>/qat_results_<name>.json`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_export import AUTO, EVAL, export_variants
from yolo4.darknet import load
from yolo4.evaluation.evaluate import predict_dataset
from yolo4.evaluation.metrics import coco_evaluate, paired_bootstrap
from yolo4.export import load_exported
from yolo4.export.common import exported_spec, preprocess_record
from yolo4.export.quantize import calibration_images
from yolo4.export.sensitivity import sqnr_of
from yolo4.export.tflite import HEAD_RANGE
from yolo4.inference.detector import Detector

PTQ = (
    ("ONNX int8 onnxruntime percentile", "onnx", {"int8": True, "int8_tool": "onnxruntime"}),
    ("ONNX int8 NNCF", "onnx", {"int8": True, "int8_tool": "nncf"}),
    ("ONNX int8 NNCF + auto float layers", "onnx", {"int8": True, "int8_tool": "nncf", **AUTO}),
    ("OpenVINO int8 NNCF", "openvino", {"int8": True, "int8_tool": "nncf"}),
    ("TFLite int8 PT2E", "tflite", {"int8": True}),
    ("ONNX int8 NNCF, 8-bit weights", "onnx", {"int8": True, "int8_tool": "nncf", "int8_weight_bits": 8}),
    ("OpenVINO int8 NNCF, 8-bit weights", "openvino", {"int8": True, "int8_tool": "nncf", "int8_weight_bits": 8}),
)
# --ptq names of the PTQ rows (the sensitivity analysis of "nncf-auto" runs one forward pass per
# layer: ~15 min for yolov4-csp-leaky's 152 layers on one thread). The ONNX rows run in
# onnxruntime, whose int8 is exact on every CPU; the OpenVINO rows in OpenVINO, whose int8 kernels
# saturate on CPUs without VNNI where weights use 8 bits (the "-8bit" rows; the default is 7)
PTQ_KEYS = ("onnxruntime", "nncf", "nncf-auto", "openvino", "tflite", "nncf-8bit", "openvino-8bit")
QAT_FILES = (
    ("QAT int8 ONNX (onnxruntime)", "best-int8.onnx", "onnxruntime"),
    ("QAT int8 OpenVINO IR", "best-int8.xml", "auto"),
    ("QAT weights and ranges, TFLite int8 PT2E", "best-int8.tflite", "auto"),
)


def score(net, val, names: list[str]) -> tuple[float, float, list, list]:
    """(COCO mAP50, mAP50-95, ground truth, predictions) of `net` on `val`."""
    det = Detector(net, names=names, postprocess=EVAL, device="cpu")
    r = predict_dataset(det, val, batch_size=1, progress=False)
    m = coco_evaluate(r.gts, r.preds, names, image_sizes=r.sizes)
    return float(m.map50), float(m.map), r.gts, r.preds


def raw_heads(net, x: np.ndarray) -> list[torch.Tensor]:
    """The raw head tensors [(B, A*(5+C), h, w)] of a Darknet or an exported file (outputs=raw) on x (B, 3, H, W)."""
    with torch.no_grad():
        return [o.float() for o in net.eval()(torch.from_numpy(x))]


def heads_sqnr(outs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """SQNR (dB) of raw heads against fp32's, both clipped to the int8 heads' range [-HEAD_RANGE, HEAD_RANGE]
    (a logit beyond it changes no score by more than 0.001; TFLite's int8 heads stop there)."""
    clip = functools.partial(torch.clamp, min=-HEAD_RANGE, max=HEAD_RANGE)
    return sqnr_of([clip(o) for o in outs], [clip(r) for r in reference])


def from_checkpoint(path: Path, folder: Path) -> tuple[Path, Path]:
    """A run's best.pt as darknet cfg + weights (its EMA weights)."""
    from yolo4.export.darknet import export_darknet
    from yolo4.training.checkpoint import trained_network

    return export_darknet(trained_network(path), folder / "fp32.cfg")


def qat_rows(add, recipe: str, qat_dir: Path, a, cfg: Path, weights: Path, size: int, names: list[str]) -> None:
    """One QAT run of `recipe` ("epochs=3,lr=0.0001") in `qat_dir`, and its rows, each scored by `add`:
    best.pt's fake-quantised model (the note says which epoch training chose), then each int8 file."""
    from yolo4.api import train
    from yolo4.errors import ExportError

    settings = [kv.strip() for kv in recipe.split(",") if kv.strip()]
    epochs = [int(kv.split("=", 1)[1]) for kv in settings if kv.startswith("epochs=")] or [1]
    options = [kv for kv in settings if not kv.startswith("epochs=")]
    t = time.perf_counter()
    try:
        train(
            a.data,
            model=str(cfg),
            weights=str(weights),
            qat=True,
            epochs=epochs[0],
            img_size=size,
            batch=a.qat_batch,
            out=str(qat_dir),
            options=[f"qat_calib_images={a.calib_count}", "qat_export=onnx,openvino,tflite", f"threads={a.threads}"]
            + ["progress=false", *options],
        )
    except ExportError as e:  # the run kept best.pt; the int8 files it did write are scored below
        print(f"QAT {recipe}: {e}", file=sys.stderr)
    qat_s = time.perf_counter() - t
    history = [r for r in csv.DictReader((qat_dir / "results.csv").open()) if r.get("val/mAP50")]
    best = max(history, key=lambda r: 0.1 * float(r["val/mAP50"]) + 0.9 * float(r["val/mAP50-95"]))
    which = f"best.pt: epoch {best['epoch']} of {epochs[0]}" + (" = the PTQ point" if best["epoch"] == "0" else "")
    name = f"QAT {recipe}"
    if (qat_dir / "best.pt").is_file():  # the fake-quantised model itself, scored like every other row
        add(f"{name}, fake-quantised PyTorch", fake_quantised(qat_dir), qat_s, which)
    for label, file, runtime in QAT_FILES:
        path = qat_dir / file
        if path.is_file():
            add(f"{name}: {label}", load_exported(path, threads=a.threads, runtime=runtime), qat_s)
    if (qat_dir / "best.weights").is_file():  # beside it: the same weights with every range calibrated anew
        from yolo4.export import ExportOptions, export_model

        path = qat_dir / "best-int8-calibrated.tflite"  # ranges as a post-training export sets them
        options = ExportOptions(
            format="tflite",
            img_size=(size, size),
            int8=True,
            calib=str(a.data),
            calib_count=a.calib_count,
            int8_bias_correction=False,  # as the QAT run's own file: only the ranges differ
        )
        export_model(load(qat_dir / "best.cfg", qat_dir / "best.weights"), options, path, names=names)
        add(
            f"{name}: QAT weights, TFLite int8 PT2E, ranges calibrated anew",
            load_exported(path, threads=a.threads),
            qat_s,
        )


def fake_quantised(qat_dir: Path):
    """A QAT run's best.pt as the fake-quantised Darknet that its training validated (its EMA weights)."""
    from yolo4.training.qat import load_qat_checkpoint

    return load_qat_checkpoint(qat_dir / "best.pt", load(qat_dir / "best.cfg", qat_dir / "best.weights"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", help="the trained model's darknet cfg")
    p.add_argument("--weights", help="its darknet weights")
    p.add_argument("--checkpoint", help="or a run's best.pt instead of --cfg/--weights")
    p.add_argument("--data", required=True, help="its dataset (train split calibrates and QAT trains)")
    p.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="the images scored: the val split, or every image (train + val: more boxes, a narrower "
        "interval for int8's loss against fp32, though the model has seen the train images)",
    )
    p.add_argument("--name", default="model", help="the model's name in the table")
    p.add_argument("--calib-count", type=int, default=100)
    p.add_argument(
        "--qat-recipe",
        action="append",
        help="train settings of one QAT run, comma-separated KEY=VALUE (repeatable; default: epochs=1)",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and the runtimes")
    p.add_argument("--qat-batch", type=int, default=16)
    p.add_argument("--skip-ptq", action="store_true")
    p.add_argument(
        "--ptq",
        nargs="+",
        choices=PTQ_KEYS,
        default=list(PTQ_KEYS),
        help="the post-training rows to measure (default: all)",
    )
    p.add_argument("--skip-qat", action="store_true", help="only the float and post-training rows")
    p.add_argument(
        "--formats", default="onnx,openvino,tflite", help="post-training formats to include (default all three)"
    )
    p.add_argument("--out", default="benchmarks/results", help="where the table and JSON go")
    a = p.parse_args(argv)
    from yolo4.data.dataset import load_dataset

    torch.set_num_threads(a.threads)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from yolo4.training.validation import readable_subset

    val, unreadable = readable_subset(load_dataset(a.data, a.split, progress=False))
    for problem in unreadable:
        print(f"image left out (as training's validation does): {problem}", file=sys.stderr)
    names = list(val.names)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-qat-") as tmp:
        if a.checkpoint:
            cfg, weights = from_checkpoint(Path(a.checkpoint), Path(tmp))
        else:
            cfg, weights = Path(a.cfg), Path(a.weights)
        model = load(cfg, weights)
        size = model.input_hw[0]

        # the scored images as detect prepares them: every row's raw heads against fp32's
        x, _ = calibration_images(
            a.data, len(val), (size, size), preprocess_record(exported_spec(model, (size, size)))["resize"], a.split
        )
        reference: list = []  # fp32's (gts, preds, raw heads), the other rows' partner

        def add(label: str, net, seconds: float = 0.0, note: str = "") -> None:
            m50, m, gts, preds = score(net, val, names)
            heads = raw_heads(net, x)
            if not reference:
                reference.extend([gts, preds, heads])
            _, lo, hi = paired_bootstrap(gts, reference[1], preds, len(names))
            row = {"variant": label, "map50": m50, "map": m, "seconds": seconds, "note": note}
            rows.append(row | {"delta50_interval": [lo, hi], "heads_sqnr_db": heads_sqnr(heads, reference[2])})
            print(f"{label:40s} mAP50 {m50:.4f}  mAP50-95 {m:.4f}", file=sys.stderr)

        add("PyTorch fp32", model)
        if not a.skip_ptq:
            import bench_export

            bench_export.RECIPES = tuple(r for r, key in zip(PTQ, PTQ_KEYS) if key in a.ptq)
            t = time.perf_counter()
            files, floats = export_variants(
                model, Path(tmp) / "ptq", a.data, a.calib_count, "train", names, set(a.formats.split(","))
            )
            print(f"PTQ exports: {time.perf_counter() - t:.0f} s", file=sys.stderr)
            for label, path in files.items():
                runtime = "onnxruntime" if path.suffix == ".onnx" else "auto"
                note = f"float: {', '.join(map(str, floats[label]))}" if floats.get(label) else ""
                add(label, load_exported(path, threads=a.threads, runtime=runtime), note=note)
        for i, recipe in enumerate([] if a.skip_qat else a.qat_recipe or ["epochs=1"]):
            qat_rows(add, recipe, out / f"qat_run_{a.name}_{i}", a, cfg, weights, size, names)
    base, base_map = rows[0]["map50"], rows[0]["map"]
    boxes = sum(len(val.labels(i)[0]) for i in range(len(val)))
    lines = [
        f"### {a.name} on the {a.split} split of {a.data} ({len(val)} images, {boxes} boxes): int8 recipes against its "
        "ground truth",
        "",
        f"One box moves mAP50 by ~{100 / max(boxes, 1):.1f} points: differences below that are noise. The "
        "interval: where 95% of the ΔmAP50 fall when the scored images are resampled (paired bootstrap, 1000 "
        "draws, darknet-style mAP@0.5 with every detection kept, so its centre can differ from COCO's ΔmAP50).",
        "",
        "The heads' SQNR: the raw head tensors on the scored images against fp32's (logits clipped to "
        f"±{HEAD_RANGE:g}), free of that noise.",
        "",
        "| variant | mAP50 | mAP50-95 | ΔmAP50 vs fp32 (points) | its 95% interval | ΔmAP50-95 (points) "
        "| heads' SQNR vs fp32 (dB) |",
        "|---|---|---|---|---|---|---|",
    ]

    def interval(r: dict) -> str:
        lo, hi = r.get("delta50_interval") or (None, None)
        return "" if lo is None else f"{100 * lo:+.1f} .. {100 * hi:+.1f}"

    def sqnr(r: dict) -> str:
        db = r.get("heads_sqnr_db")
        return "" if db is None or r is rows[0] else f"{db:.1f}"

    for r in rows:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(
            f"| {r['variant']}{note} | {r['map50']:.4f} | {r['map']:.4f} | {100 * (r['map50'] - base):+.2f} "
            f"| {interval(r)} "
            f"| {100 * (r['map'] - base_map):+.2f} | {sqnr(r)} |"
        )
    md = "\n".join(lines) + "\n"
    print(md)
    (out / f"qat_table_{a.name}.md").write_text(md)
    (out / f"qat_results_{a.name}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
