"""Accuracy and CPU latency of every export format and int8 recipe, in one table.

    python benchmarks/bench_export.py --run runs/demo            # a trained model + yolo-fastest-1.1
    python benchmarks/bench_export.py --cfg best.cfg --weights best.weights --data ../shared/datasets/kangaroo
    python benchmarks/bench_export.py --skip-trained             # only the real yolo-fastest-1.1 table

1. A trained model (default: the demo's `runs/demo/train/best.cfg` + `best.weights`, data
   `runs/demo/data`; or any --cfg/--weights/--data, e.g. a model trained on the kangaroo
   photos): COCO mAP50 and mAP50-95 on its val split for PyTorch fp32 and every RECIPES
   row, all through the same `Detector` pre/post-processing (conf 0.001, NMS 0.6, darknet's
   "all classes" labels, as `yolo4 val`). int8 is calibrated on `--calib-count` images of
   the *train* split. Latency: median network time for one image (batch 1) on the CPU with
   `--threads` threads, measured on a random input after warm-up.
2. The real COCO model `yolo-fastest-1.1` (../shared/reference; depthwise convolutions), as
   a new user meets it: int8 calibrated on 100 real photos it has never seen (the kangaroo
   train split, `--ref-calib`), scored on real photos (darknet's 3 sample photos + the
   kangaroo val split) against its own float32 detections: mAP50 taking the fp32 detections
   (conf 0.25, one label per box) as ground truth and each variant's detections at conf
   0.001 as predictions, and how many fp32 detections survive (same class, IoU >= 0.7 at
   conf 0.25).

Writes `<out>/export_table.md`, `<out>/export_results.json` and `<out>/export_accuracy.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from yolo4.darknet import load
from yolo4.data.sources import load_image
from yolo4.errors import Yolo4Error
from yolo4.evaluation.evaluate import evaluate
from yolo4.evaluation.metrics import box_iou_np, coco_evaluate
from yolo4.export import ExportOptions, export_model, load_exported
from yolo4.inference.detector import Detector
from yolo4.ops.nms import DETECT_POSTPROCESS, VAL_POSTPROCESS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
KANGAROO = REPO.parent / "shared" / "datasets" / "kangaroo"

AUTO = {"int8_min_agreement": 0.95, "int8_max_float": 8}  # mixed precision chosen by the sensitivity analysis
# (label, format, ExportOptions fields): every recipe tried; formats whose packages are missing are skipped
RECIPES = (
    ("ONNX fp32", "onnx", {}),
    ("ONNX int8 onnxruntime percentile", "onnx", {"int8": True, "int8_tool": "onnxruntime"}),
    ("ONNX int8 onnxruntime minmax", "onnx", {"int8": True, "int8_tool": "onnxruntime", "calib_method": "minmax"}),
    ("ONNX int8 NNCF", "onnx", {"int8": True, "int8_tool": "nncf"}),
    ("ONNX int8 NNCF + auto float layers", "onnx", {"int8": True, "int8_tool": "nncf", **AUTO}),
    ("OpenVINO fp32", "openvino", {}),
    ("ONNX int8 NNCF, 8-bit weights", "onnx", {"int8": True, "int8_tool": "nncf", "int8_weight_bits": 8}),
    ("OpenVINO int8 NNCF", "openvino", {"int8": True, "int8_tool": "nncf"}),
    ("OpenVINO int8 NNCF, 8-bit weights", "openvino", {"int8": True, "int8_tool": "nncf", "int8_weight_bits": 8}),
    ("TFLite fp32", "tflite", {}),
    ("TFLite int8 PT2E", "tflite", {"int8": True}),
    ("TFLite int8 PT2E + auto float layers", "tflite", {"int8": True, **AUTO}),
)
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}
EVAL = VAL_POSTPROCESS  # yolo4 val: conf 0.001, NMS 0.6, every class above conf, 300 per image


def torch_latency_ms(model, input_hw: tuple[int, int], repeats: int = 30, warmup: int = 5) -> float:
    """Median ms of one batch-1 forward of a PyTorch module on a random input."""
    x = torch.rand(1, 3, *input_hw)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def export_variants(
    model, folder: Path, calib: str | None, calib_count: int, calib_split: str, names: list[str], formats: set[str]
) -> tuple[dict[str, Path], dict[str, list[int]]]:
    """Export every RECIPES row into `folder`; returns (label -> file, label -> layers kept float);
    failed or skipped rows are absent."""
    files, floats = {}, {}
    for label, fmt, fields in RECIPES:
        if fmt not in formats:
            continue
        out = folder / (label.replace(" ", "_").replace("+", "").replace(",", "").lower() + SUFFIX[fmt])
        int8 = fields.get("int8", False)
        options = ExportOptions(
            format=fmt, calib=calib if int8 else None, calib_count=calib_count, calib_split=calib_split, **fields
        )
        t = time.perf_counter()
        try:
            r = export_model(model, options, out, names=names)
        except Yolo4Error as e:
            print(f"{label}: export failed: {e}", file=sys.stderr)
            continue
        print(f"exported {label} in {time.perf_counter() - t:.0f} s -> {out.name}", file=sys.stderr)
        files[label] = out
        q = r.report.get("quantization")
        floats[label] = list(q.get("float_layers", [])) if isinstance(q, dict) else []
    return files, floats


def _size_mb(path: Path) -> float:
    extra = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return (path.stat().st_size + (extra.stat().st_size if extra and extra.is_file() else 0)) / 1e6


def networks(model, files: dict[str, Path], threads: int):
    """label -> (module for Detector, latency ms) for PyTorch and every exported file."""
    torch.set_num_threads(threads)
    yield "PyTorch fp32", model, torch_latency_ms(model, model.input_hw)
    for label, path in files.items():
        net = load_exported(path, threads=threads, runtime="onnxruntime" if path.suffix == ".onnx" else "auto")
        yield label, net, net.latency_ms(repeats=30, warmup=5)


def bench_trained(
    cfg: Path, weights: Path, data: Path, folder: Path, calib_count: int, threads: int, formats: set[str]
) -> list[dict]:
    from yolo4.data.dataset import load_dataset

    model = load(cfg, weights)
    val = load_dataset(data, "val", progress=False)
    files, floats = export_variants(model, folder, str(data), calib_count, "train", list(val.names), formats)
    rows = []
    for label, net, latency in networks(model, files, threads):
        det = Detector(net, names=list(val.names), postprocess=EVAL, device="cpu")
        m = evaluate(det, val, batch_size=1, progress=False)
        rows.append(
            {
                "model": cfg.stem,
                "variant": label,
                "map50": m.map50,
                "map": m.map,
                "latency_ms": latency,
                "size_mb": _size_mb(files[label]) if label in files else weights.stat().st_size / 1e6,
                "images": m.num_images,
                "float_layers": floats.get(label, []),
            }
        )
        print(f"{label:13s} mAP50 {m.map50:.4f}  mAP50-95 {m.map:.4f}  {latency:.2f} ms", file=sys.stderr)
    return rows


def _detections(det: Detector, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(r.boxes, r.scores, r.class_ids) for r in det.predict_batch(images)]


def real_photos(reference: Path, kangaroo: Path) -> tuple[list[Path], list[np.ndarray], list[str]]:
    """darknet's sample photos + the kangaroo val split; unreadable files skipped with a note."""
    paths = sorted((reference / "images").glob("*.jpg"))
    split = kangaroo / "ImageSets" / "Main" / "val.txt"
    if split.is_file():
        paths += [kangaroo / "images" / f"{i}.jpg" for i in split.read_text().split()]
    kept, images, notes = [], [], []
    for p in paths:
        try:
            images.append(load_image(p))
            kept.append(p)
        except Yolo4Error as e:
            notes.append(f"skipped {p.name}: {e}")
    return kept, images, notes


def surviving(truth: list[tuple[np.ndarray, np.ndarray]], got: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """How many reference detections reappear (same class, box IoU >= 0.7)."""
    n = 0
    for (tb, tc), (gb, gc) in zip(truth, got):
        if len(tb) and len(gb):
            iou = box_iou_np(tb, gb)
            n += int(((iou >= 0.7) & (tc[:, None] == gc[None, :])).any(axis=1).sum())
    return n


def agreement(truth: list, preds: list, names: list[str]) -> dict:
    """Predictions (boxes, scores, class ids; conf 0.001) scored against reference detections
    (boxes, class ids; conf 0.25) taken as ground truth: agreement mAP50 / mAP50-95, and how many
    reference detections survive at conf 0.25 (same class, IoU >= 0.7)."""
    m = coco_evaluate(truth, preds, names)
    at25 = [(b[s > 0.25], c[s > 0.25]) for b, s, c in preds]
    return {
        "agreement_map50": m.map50,
        "agreement_map": m.map,
        "surviving": surviving(truth, at25),
        "truth_boxes": int(sum(len(t[1]) for t in truth)),
    }


def bench_reference(reference: Path, calib: Path, folder: Path, threads: int, formats: set[str]) -> list[dict]:
    models = reference / "models"
    model = load(models / "yolo-fastest-1.1.cfg", models / "yolo-fastest-1.1.weights")
    names = [n.strip() for n in (models / "coco.names").read_text().splitlines() if n.strip()]
    paths, images, notes = real_photos(reference, KANGAROO)
    for note in notes:
        print(note, file=sys.stderr)
    files, floats = export_variants(model, folder, str(calib), 100, "train", names, formats)
    common = {"names": names, "img_size": 320, "resize": "stretch"}
    truth_det = Detector(model, postprocess=DETECT_POSTPROCESS, device="cpu", **common)
    truth = [(b, c) for b, _, c in _detections(truth_det, images)]
    rows = []
    for label, net, latency in networks(model, files, threads):
        det = Detector(
            net, postprocess=DETECT_POSTPROCESS.replace(conf=0.001), names=names, resize="stretch", device="cpu"
        )
        row = agreement(truth, _detections(det, images), names)
        rows.append(
            {
                "model": "yolo-fastest-1.1",
                "variant": label,
                **row,
                "latency_ms": latency,
                "images": len(images),
                "size_mb": _size_mb(files[label])
                if label in files
                else (models / "yolo-fastest-1.1.weights").stat().st_size / 1e6,
                "float_layers": floats.get(label, []),
            }
        )
        print(f"{label:40s} agreement mAP50 {row['agreement_map50']:.4f}  {latency:.2f} ms", file=sys.stderr)
    return rows


def _floats(row: dict) -> str:
    return f" (float: {', '.join(str(i) for i in row['float_layers'])})" if row.get("float_layers") else ""


def table(rows: list[dict], trained: bool, threads: int) -> str:
    if trained:
        head = (
            "| format | mAP50 | mAP50-95 | ΔmAP50 vs fp32 (points) | CPU ms/img (batch 1, "
            f"{threads} threads) | file MB |\n|---|---|---|---|---|---|"
        )
        base = next((r["map50"] for r in rows if r["variant"] == "PyTorch fp32"), float("nan"))
        lines = [
            f"| {r['variant']}{_floats(r)} | {r['map50']:.4f} | {r['map']:.4f} | {100 * (r['map50'] - base):+.2f} | "
            f"{r['latency_ms']:.2f} | {r['size_mb']:.1f} |"
            for r in rows
        ]
    else:
        head = (
            "| format | mAP50 vs PyTorch fp32 detections | mAP50-95 vs fp32 | fp32 detections kept "
            f"(IoU >= 0.7, same class) | CPU ms/img (batch 1, {threads} threads) | file MB |\n|---|---|---|---|---|---|"
        )
        lines = [
            f"| {r['variant']}{_floats(r)} | {r['agreement_map50']:.4f} | {r['agreement_map']:.4f} | "
            f"{r['surviving']}/{r['truth_boxes']} | {r['latency_ms']:.2f} | {r['size_mb']:.2f} |"
            for r in rows
        ]
    return "\n".join([head, *lines])


def plot(trained_rows: list[dict], ref_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (trained_rows, "map50", "trained model: val mAP50"),
        (ref_rows, "agreement_map50", "yolo-fastest-1.1: mAP50 vs fp32 detections"),
    ]
    panels = [p for p in panels if p[0]]
    if not panels:
        return
    height = max(3.8, 0.35 * max(len(p[0]) for p in panels) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), height), squeeze=False)
    for ax, (rows, key, title) in zip(axes[0], panels):
        labels = [r["variant"] for r in rows][::-1]
        values = [r[key] for r in rows][::-1]
        colors = ["#555" if "PyTorch" in v else "#1f77b4" if "fp32" in v else "#d62728" for v in labels]
        bars = ax.barh(labels, values, color=colors)
        for b, r in zip(bars, rows[::-1]):
            ax.text(
                b.get_width(),
                b.get_y() + b.get_height() / 2,
                f" {r[key]:.3f}, {r['latency_ms']:.1f} ms",
                va="center",
                fontsize=7,
            )
        ax.set_xlim(0, 1.25)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="demo run folder (train/best.cfg, train/best.weights, data/)")
    p.add_argument("--cfg", help="trained model cfg (default <run>/train/best.cfg)")
    p.add_argument("--weights", help="trained model weights (default <run>/train/best.weights)")
    p.add_argument("--data", help="its dataset (default <run>/data)")
    p.add_argument("--reference", default=str(REFERENCE), help="shared reference folder (yolo-fastest-1.1)")
    p.add_argument("--calib-count", type=int, default=100, help="int8 calibration images from the train split")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for every runtime (default 1)")
    p.add_argument(
        "--formats", default="onnx,openvino,tflite", help="export formats to include (default onnx,openvino,tflite)"
    )
    p.add_argument(
        "--ref-calib", default=str(KANGAROO), help="yolo-fastest-1.1's calibration photos (default: kangaroo train)"
    )
    p.add_argument("--skip-trained", action="store_true")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--out", default="benchmarks/results", help="where the table, JSON and plot go")
    a = p.parse_args(argv)
    formats = set(a.formats.split(","))
    run = Path(a.run)
    cfg = Path(a.cfg) if a.cfg else run / "train" / "best.cfg"
    weights = Path(a.weights) if a.weights else run / "train" / "best.weights"
    data = Path(a.data) if a.data else run / "data"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trained_rows, ref_rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        if not a.skip_trained:
            if cfg.is_file() and weights.is_file() and data.exists():
                trained_rows = bench_trained(
                    cfg, weights, data, Path(tmp) / "trained", a.calib_count, a.threads, formats
                )
            else:
                print(
                    f"no trained model at {cfg} / {weights} / {data}: skipping part 1 (run `yolo4 train --demo`)",
                    file=sys.stderr,
                )
        if not a.skip_reference:
            if (Path(a.reference) / "models" / "yolo-fastest-1.1.weights").is_file():
                ref_rows = bench_reference(
                    Path(a.reference), Path(a.ref_calib), Path(tmp) / "reference", a.threads, formats
                )
            else:
                print(f"no reference data at {a.reference}: skipping part 2", file=sys.stderr)
    text = []
    if trained_rows:
        text += [
            f"### Trained model `{cfg}` on the val split of `{data}` ({trained_rows[0]['images']} images)",
            "",
            table(trained_rows, True, a.threads),
            "",
        ]
    if ref_rows:
        text += [
            f"### yolo-fastest-1.1 (COCO) on {ref_rows[0]['images']} real photos (darknet's samples + kangaroo val), "
            f"320x320 stretch: agreement with PyTorch fp32 ({ref_rows[0]['truth_boxes']} fp32 boxes at conf 0.25 "
            f"as ground truth; int8 calibrated on 100 other photos from {a.ref_calib})",
            "",
            table(ref_rows, False, a.threads),
            "",
        ]
    md = "\n".join(text)
    print(md)
    (out / "export_table.md").write_text(md)
    (out / "export_results.json").write_text(json.dumps({"trained": trained_rows, "reference": ref_rows}, indent=1))
    plot(trained_rows, ref_rows, out / "export_accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
