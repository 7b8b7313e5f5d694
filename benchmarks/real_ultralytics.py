"""The Ultralytics side of `bench_real.py`, run in the interpreter that has Ultralytics
(`--ultralytics-python`), never imported by yolo4: YOLOv8n built from its yaml (random
weights, nothing downloaded) trains on a YOLO-format copy of the benchmark's split for a
wall-clock budget (Ultralytics' own `time` option), is validated by Ultralytics' evaluator,
and writes its predictions on the val images (conf 0.001) for pycocotools.

    python real_ultralytics.py --data DATA.yaml --out DIR --minutes 8 --img-size 320 --batch 16 \
        --threads 2 --val-list val.txt [--amp fp32|bf16|default] [--model yolov8n.yaml]

Writes DIR/result.json: {"mAP50", "mAP50-95" (Ultralytics' evaluator), "epochs",
"train_s", "curve": [{"epoch", "time_s", "mAP50", "mAP50-95"}], "predictions":
{image path: [[x1, y1, x2, y2, score, class], ...]} in original image pixels}.
Imports only the standard library, NumPy, OpenCV, torch and Ultralytics.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path


def _offline() -> None:
    """No network and no fonts: no hub, no update checks, no analytics, no plots."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics >= 8.3: skip every online check
    from ultralytics import settings

    off = {"sync": False, "hub": False, "wandb": False, "tensorboard": False, "mlflow": False, "comet": False}
    settings.update({k: v for k, v in off.items() if k in settings})  # the keys vary between versions


def _curve(results_csv: Path) -> list[dict[str, float]]:
    """Ultralytics' results.csv -> [{epoch, time_s (cumulative), mAP50, mAP50-95}]."""
    rows = []
    with open(results_csv) as f:
        for r in csv.DictReader(f):
            r = {k.strip(): v for k, v in r.items()}
            rows.append(
                {
                    "epoch": int(float(r["epoch"])),
                    "time_s": float(r.get("time", "nan")),
                    "mAP50": float(r["metrics/mAP50(B)"]),
                    "mAP50-95": float(r["metrics/mAP50-95(B)"]),
                }
            )
    return rows


def train(a: argparse.Namespace, out: Path) -> float:
    """YOLOv8n (or `a.model`) from its yaml, random weights, Ultralytics' defaults with the given
    size, batch, budget and seed. Returns the training seconds."""
    from ultralytics import YOLO

    model = YOLO(a.model)  # built from the yaml: random weights
    extra = {} if a.amp == "default" else {"amp": a.amp if a.amp == "bf16" else False}
    t0 = time.time()
    model.train(
        data=a.data,
        epochs=a.epochs or 1000,  # with a budget, `time` decides
        time=a.minutes / 60 if a.minutes else None,
        imgsz=a.img_size,
        batch=a.batch,
        device="cpu",
        project=str(out),
        name="train",
        exist_ok=True,
        pretrained=False,
        plots=False,
        seed=a.seed,
        verbose=False,
        **extra,
    )
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Ultralytics dataset yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=None, help="training budget (Ultralytics `time`)")
    ap.add_argument("--epochs", type=int, default=None, help="a fixed number of epochs instead of a budget")
    ap.add_argument("--img-size", type=int, required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--val-list", required=True, help="text file of the val image paths to predict on")
    ap.add_argument("--model", default="yolov8n.yaml")
    ap.add_argument("--amp", default="default", choices=("default", "fp32", "bf16"), help="default: its own choice")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    _offline()
    import ultralytics
    from ultralytics import YOLO

    out = Path(a.out).resolve()
    trained = out / "train" / "trained.json"  # a finished training is reused when this is run again
    if trained.exists():
        train_s = json.loads(trained.read_text())["train_s"]
        print(f"reusing the finished training in {trained.parent} ({train_s / 60:.1f} min)")
    else:
        train_s = train(a, out)
        trained.write_text(json.dumps({"train_s": train_s}))
    best = out / "train" / "weights" / "best.pt"
    model = YOLO(str(best))
    m = model.val(
        data=a.data,
        imgsz=a.img_size,
        batch=a.batch,
        conf=0.001,
        device="cpu",
        plots=False,
        project=str(out),
        name="val",
    )
    paths = [ln.strip() for ln in Path(a.val_list).read_text().splitlines() if ln.strip()]
    preds = {}
    for p in paths:  # decoded as yolo4 decodes them (OpenCV keeps what a truncated JPEG holds)
        img = cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # BGR
        if img is None:  # (predict(None) would run on Ultralytics' sample images instead)
            raise SystemExit(f"{p}: cannot be decoded; bench_real lists only the val images that decode")
        r = model.predict(img, imgsz=a.img_size, conf=0.001, device="cpu", verbose=False, max_det=300)[0]
        b = r.boxes
        rows = torch.cat([b.xyxy, b.conf[:, None], b.cls[:, None]], 1).tolist() if len(b) else []
        preds[p] = rows
    result = {
        "model": a.model,
        "mAP50": float(m.box.map50),
        "mAP50-95": float(m.box.map),
        "train_s": train_s,
        "curve": _curve(out / "train" / "results.csv"),
        "predictions": preds,
        "ultralytics": ultralytics.__version__,
        "threads": torch.get_num_threads(),
        "amp": a.amp,
    }
    result["epochs"] = len(result["curve"])
    (out / "result.json").write_text(json.dumps(result))
    print(
        f"ultralytics {a.model}: mAP50 {result['mAP50']:.3f}, mAP50-95 {result['mAP50-95']:.3f}, "
        f"{result['epochs']} epochs in {train_s / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
