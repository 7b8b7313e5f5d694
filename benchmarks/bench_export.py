"""Accuracy and CPU latency of every export format, in one table.

    python benchmarks/bench_export.py --run runs/demo            # the demo's trained model
    python benchmarks/bench_export.py --skip-trained             # only the yolo-fastest agreement table

1. A trained model (default: the demo's `runs/demo/train/best.cfg` + `best.weights`, data
   `runs/demo/data`): COCO mAP50 and mAP50-95 on its val split for PyTorch fp32, ONNX fp32,
   ONNX int8 (onnxruntime QDQ), TFLite fp32 and TFLite int8 (litert-torch, int8 input),
   all through the same `Detector` pre/post-processing (conf 0.001, NMS 0.6, darknet's
   "all classes" labels, as `yolo4 val`). int8 is calibrated on `--calib-count` images of
   the *train* split. Latency: median network time for one image (batch 1) on the CPU with
   `--threads` threads, measured on a random input after warm-up.
2. The real COCO model `yolo-fastest-1.1` (../shared/reference): on the three reference
   images, how well each format's detections agree with PyTorch fp32's: mAP50 taking the
   fp32 detections (conf 0.25, one label per box, as OpenCV's table) as ground truth and
   each format's detections at conf 0.001 as predictions. Its int8 calibration can only
   use those same three images (no other COCO images are at hand), which flatters int8.

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
from yolo4.evaluation.metrics import coco_evaluate
from yolo4.export import ExportOptions, export_model, load_exported
from yolo4.inference.detector import Detector
from yolo4.ops.nms import DETECT_POSTPROCESS, VAL_POSTPROCESS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"

# (label, format, int8)
VARIANTS = (
    ("PyTorch fp32", "torch", False),
    ("ONNX fp32", "onnx", False),
    ("ONNX int8", "onnx", True),
    ("TFLite fp32", "tflite", False),
    ("TFLite int8", "tflite", True),
)
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
) -> dict[str, Path]:
    """Export every non-PyTorch variant into `folder`; returns label -> file (skipped ones absent)."""
    files = {}
    for label, fmt, int8 in VARIANTS:
        if fmt == "torch" or fmt not in formats:
            continue
        out = folder / f"{label.replace(' ', '_').lower()}.{fmt}"
        options = ExportOptions(
            format=fmt, int8=int8, calib=calib if int8 else None, calib_count=calib_count, calib_split=calib_split
        )
        t = time.perf_counter()
        try:
            export_model(model, options, out, names=names)
        except Yolo4Error as e:
            print(f"{label}: export failed: {e}", file=sys.stderr)
            continue
        print(f"exported {label} in {time.perf_counter() - t:.0f} s -> {out.name}", file=sys.stderr)
        files[label] = out
    return files


def networks(model, files: dict[str, Path], threads: int):
    """label -> (module for Detector, latency ms) for PyTorch and every exported file."""
    torch.set_num_threads(threads)
    yield "PyTorch fp32", model, torch_latency_ms(model, model.input_hw)
    for label, path in files.items():
        net = load_exported(path, threads=threads)
        yield label, net, net.latency_ms(repeats=30, warmup=5)


def bench_trained(
    cfg: Path, weights: Path, data: Path, folder: Path, calib_count: int, threads: int, formats: set[str]
) -> list[dict]:
    from yolo4.data.dataset import load_dataset

    model = load(cfg, weights)
    val = load_dataset(data, "val", progress=False)
    files = export_variants(model, folder, str(data), calib_count, "train", list(val.names), formats)
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
                "size_mb": (files[label].stat().st_size / 1e6) if label in files else weights.stat().st_size / 1e6,
                "images": m.num_images,
            }
        )
        print(f"{label:13s} mAP50 {m.map50:.4f}  mAP50-95 {m.map:.4f}  {latency:.2f} ms", file=sys.stderr)
    return rows


def _detections(det: Detector, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(r.boxes, r.scores, r.class_ids) for r in det.predict_batch(images)]


def bench_reference(reference: Path, folder: Path, threads: int, formats: set[str]) -> list[dict]:
    models = reference / "models"
    model = load(models / "yolo-fastest-1.1.cfg", models / "yolo-fastest-1.1.weights")
    names = [n.strip() for n in (models / "coco.names").read_text().splitlines() if n.strip()]
    image_paths = sorted((reference / "images").glob("*.jpg"))
    images = [load_image(p) for p in image_paths]
    files = export_variants(model, folder, str(reference / "images"), len(images), "train", names, formats)
    common = {"names": names, "img_size": 320, "resize": "stretch"}
    truth_det = Detector(model, postprocess=DETECT_POSTPROCESS, device="cpu", **common)
    truth = [(b, c) for b, _, c in _detections(truth_det, images)]
    rows = []
    for label, net, latency in networks(model, files, threads):
        det = Detector(
            net, postprocess=DETECT_POSTPROCESS.replace(conf=0.001), names=names, resize="stretch", device="cpu"
        )
        preds = _detections(det, images)
        m = coco_evaluate(truth, preds, names)
        rows.append(
            {
                "model": "yolo-fastest-1.1",
                "variant": label,
                "agreement_map50": m.map50,
                "agreement_map": m.map,
                "latency_ms": latency,
                "truth_boxes": int(sum(len(t[1]) for t in truth)),
                "size_mb": (files[label].stat().st_size / 1e6)
                if label in files
                else (models / "yolo-fastest-1.1.weights").stat().st_size / 1e6,
            }
        )
        print(f"{label:13s} agreement mAP50 {m.map50:.4f}  {latency:.2f} ms", file=sys.stderr)
    return rows


def table(rows: list[dict], trained: bool, threads: int) -> str:
    if trained:
        head = (
            "| format | mAP50 | mAP50-95 | ΔmAP50 vs fp32 (points) | CPU ms/img (batch 1, "
            f"{threads} threads) | file MB |\n|---|---|---|---|---|---|"
        )
        base = next((r["map50"] for r in rows if r["variant"] == "PyTorch fp32"), float("nan"))
        lines = [
            f"| {r['variant']} | {r['map50']:.4f} | {r['map']:.4f} | {100 * (r['map50'] - base):+.2f} | "
            f"{r['latency_ms']:.2f} | {r['size_mb']:.1f} |"
            for r in rows
        ]
    else:
        head = (
            "| format | mAP50 vs PyTorch fp32 detections | mAP50-95 vs fp32 | CPU ms/img (batch 1, "
            f"{threads} threads) | file MB |\n|---|---|---|---|---|"
        )
        lines = [
            f"| {r['variant']} | {r['agreement_map50']:.4f} | {r['agreement_map']:.4f} | "
            f"{r['latency_ms']:.2f} | {r['size_mb']:.2f} |"
            for r in rows
        ]
    return "\n".join([head, *lines])


def plot(trained_rows: list[dict], ref_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (trained_rows, "map50", "trained demo model: val mAP50"),
        (ref_rows, "agreement_map50", "yolo-fastest-1.1: mAP50 vs fp32 detections"),
    ]
    panels = [p for p in panels if p[0]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.8), squeeze=False)
    for ax, (rows, key, title) in zip(axes[0], panels):
        labels = [r["variant"] for r in rows]
        values = [r[key] for r in rows]
        bars = ax.bar(
            labels,
            values,
            color=["#555" if "PyTorch" in v else "#1f77b4" if "fp32" in v else "#d62728" for v in labels],
        )
        for b, r in zip(bars, rows):
            ax.text(
                b.get_x() + b.get_width() / 2,
                b.get_height(),
                f"{r[key]:.3f}\n{r['latency_ms']:.1f} ms",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_ylim(0, 1.15)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
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
    p.add_argument("--formats", default="onnx,tflite", help="export formats to include (default onnx,tflite)")
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
                ref_rows = bench_reference(Path(a.reference), Path(tmp) / "reference", a.threads, formats)
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
            f"### yolo-fastest-1.1 (COCO) on the {len(list((Path(a.reference) / 'images').glob('*.jpg')))} "
            f"reference images, 320x320 stretch: agreement with PyTorch fp32 "
            f"({ref_rows[0]['truth_boxes']} fp32 boxes at conf 0.25 as ground truth; int8 calibrated on "
            "the same images)",
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
