"""Real data, equal footing: yolo4 against Ultralytics YOLOv8n on a small real dataset.

    python benchmarks/bench_real.py --ultralytics-python /path/to/venv/bin/python
    python benchmarks/bench_real.py --minutes 6 --models yolov4-tiny --set mosaic=0.5   # a recipe experiment
    python benchmarks/bench_real.py --epochs 30 --threads 1 ...   # equal epochs instead of equal time

Both train from scratch (random weights; YOLOv8n is built from its yaml) on the same fixed
split (default: the `kangaroo` set of the project's shared data, `ImageSets/Main/{train,val}.txt`),
at the same input size and batch, with the same number of CPU threads and the same wall-clock
training budget, one after the other in this run. yolo4 runs with its default settings plus
the given `--set` options and `time_budget_min`; Ultralytics with its defaults plus its
`time` option (its CPU default is float32; `--ultralytics-amp bf16` asks for bf16 autocast).

Printed for each: mAP50 and mAP50-95 from the tool's own evaluator (yolo4's is pycocotools) and
from pycocotools on the same predictions (conf 0.001) against the same ground truth; epochs,
minutes. The learning curves (validation mAP against training minutes) go into one PNG.

Ultralytics is an optional dependency of this benchmark only: give the Python interpreter that
has it (`--ultralytics-python`); it runs `real_ultralytics.py` in a subprocess, offline. Without
it the Ultralytics side is skipped with a message.

Output (under --out, default runs/bench_real): results.json, table.md, curves.png, one folder
per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "kangaroo"


def machine_line() -> str:
    """CPU model, the vector ISA that matters for training speed, and the current load."""
    from yolo4.inference.device import cpu_description

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_description()}, load {load:.1f}"


# ---------------------------------------------------------------- yolo4
def run_yolo4(model: str, args, threads: int, out: Path) -> dict:
    """Train `model` with yolo4's defaults (+ --set) for the budget; evaluate its best.pt."""
    import torch

    from yolo4.training.config import TrainConfig
    from yolo4.training.train import train

    row_file = out / "row.json"  # a finished run is reused when the benchmark runs again
    if row_file.exists():
        print(f"yolo4 {model}: reusing the finished run in {out}")
        return json.loads(row_file.read_text())
    torch.set_num_threads(threads)
    cfg = TrainConfig(
        data=str(args.data),
        model=model,
        img_size=args.img_size,
        batch=args.batch,
        time_budget_min=None if args.epochs else args.minutes,
        epochs=args.epochs or TrainConfig.epochs,
        out=str(out),
        threads=threads,
        progress=not args.quiet,
        seed=args.seed,
    )
    cfg = TrainConfig.from_args(args.set, base=cfg)
    t0 = time.time()
    result = train(cfg)
    row = score_yolo4(model, cfg, out, time.time() - t0, result.history)
    row["settings"] = args.set
    row_file.write_text(json.dumps(row))
    return row


def score_yolo4(model: str, cfg, out: Path, train_s: float, history: list[dict]) -> dict:
    """The row of a finished yolo4 run: its best.pt scored on the val images that decode, and its
    validation curve against training time."""
    import torch

    from yolo4.data.dataset import load_dataset
    from yolo4.training.checkpoint import trained_network
    from yolo4.training.train import val_size
    from yolo4.training.validation import readable_subset, validate

    net = trained_network(out / "best.pt")
    val_set, _ = readable_subset(load_dataset(cfg.data, "val", progress=False))  # as training validates
    device = torch.device("cpu")
    m = validate(net, val_set, list(val_set.names), val_size(cfg), device, cfg.val_postprocess)
    t, curve = 0.0, []
    for row in history:
        t += row.get("time_s", 0.0)
        if "val/mAP50" in row:
            curve.append(
                {"epoch": row["epoch"], "time_s": t, "mAP50": row["val/mAP50"], "mAP50-95": row["val/mAP50-95"]}
            )
    return {
        "name": f"yolo4 {model}",
        "own_mAP50": float(m.map50),
        "own_mAP50-95": float(m.map),
        "coco_mAP50": float(m.map50),  # yolo4's evaluator is pycocotools
        "coco_mAP50-95": float(m.map),
        "epochs": len(history),
        "train_s": train_s,
        "curve": curve,
    }


# ---------------------------------------------------------------- Ultralytics
def write_yolo_copy(data: Path, out: Path) -> tuple[Path, Path, list]:
    """A YOLO-format copy of `data`'s train/val split for Ultralytics (images copied, since
    Ultralytics rewrites JPEGs it finds truncated; labels written from yolo4's reading of the
    source, so both tools see the same boxes).
    Returns (data.yaml, val image list, val dataset)."""
    from yolo4.data.dataset import load_dataset

    if out.exists():
        shutil.rmtree(out)
    val_set = None
    for split in ("train", "val"):
        ds = load_dataset(data, split, progress=False)
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        for i, path in enumerate(ds.image_paths):
            shutil.copyfile(path, out / "images" / split / path.name)
            boxes, cls = ds.labels(i)
            h, w = ds.image_hw[i]
            lines = [
                f"{c} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}"
                for b, c in zip(boxes.tolist(), cls.tolist())
            ]
            (out / "labels" / split / f"{path.stem}.txt").write_text("".join(ln + "\n" for ln in lines))
        if split == "val":
            from yolo4.training.validation import readable_subset

            val_set, _ = readable_subset(ds)  # both tools are scored on the images that decode
    names = "".join(f"  {k}: {n}\n" for k, n in enumerate(val_set.names))
    yaml_path = out / "data.yaml"
    yaml_path.write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    val_list = out / "val.txt"
    val_list.write_text("".join(f"{Path(p).resolve()}\n" for p in val_set.image_paths))
    return yaml_path, val_list, val_set


def run_ultralytics(args, threads: int, out: Path) -> dict | None:
    py = args.ultralytics_python
    if not py:
        print("ultralytics: skipped (give --ultralytics-python PYTHON, an interpreter with ultralytics installed)")
        return None
    probe = subprocess.run([py, "-c", "import ultralytics"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"ultralytics: skipped ({py} cannot import ultralytics: {probe.stderr.strip().splitlines()[-1:]})")
        return None
    from yolo4.evaluation.metrics import coco_evaluate

    yaml_path, val_list, val_set = write_yolo_copy(args.data, out / "data")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(out / "config")}
    cmd = [
        py,
        str(HERE / "real_ultralytics.py"),
        "--data", str(yaml_path),
        "--out", str(out),
        *(["--epochs", str(args.epochs)] if args.epochs else ["--minutes", str(args.minutes)]),
        "--img-size", str(args.img_size),
        "--batch", str(args.batch),
        "--threads", str(threads),
        "--val-list", str(val_list),
        "--amp", args.ultralytics_amp,
        "--model", args.ultralytics_model,
        "--seed", str(args.seed),
    ]  # fmt: skip
    print("ultralytics:", " ".join(cmd))
    with open(out / "log.txt", "w") as logf:
        rc = subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        print(f"ultralytics: failed (exit {rc}); see {out / 'log.txt'}")
        return None
    res = json.loads((out / "result.json").read_text())
    gts, preds = [], []
    for i, p in enumerate(val_set.image_paths):
        gts.append(val_set.labels(i))
        rows = np.asarray(res["predictions"][str(Path(p).resolve())], np.float64).reshape(-1, 6)
        preds.append((rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)))
    m = coco_evaluate(gts, preds, list(val_set.names))
    return {
        "name": f"Ultralytics {Path(res['model']).stem} ({res['ultralytics']}, amp {res['amp']})",
        "own_mAP50": res["mAP50"],
        "own_mAP50-95": res["mAP50-95"],
        "coco_mAP50": float(m.map50),
        "coco_mAP50-95": float(m.map),
        "epochs": res["epochs"],
        "train_s": res["train_s"],  # its model.train() call, as yolo4's is its train() call
        "curve": res["curve"],
    }


# ---------------------------------------------------------------- report
def table(rows: list[dict], args, threads: int, machine: str) -> str:
    head = (
        f"{args.data.name}: {args.img_size} px, batch {args.batch}, {threads} threads, "
        + (f"{args.epochs} epochs each" if args.epochs else f"{args.minutes:g} min of training each")
        + f", from scratch; {machine}\n\n"
        "| run | epochs | minutes | mAP50 (own) | mAP50-95 (own) | mAP50 (pycocotools) | mAP50-95 (pycocotools) |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['name']} | {r['epochs']} | {r['train_s'] / 60:.1f} | {r['own_mAP50']:.3f} | {r['own_mAP50-95']:.3f} "
        f"| {r['coco_mAP50']:.3f} | {r['coco_mAP50-95']:.3f} |\n"
        for r in rows
    )
    return head + body


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("mAP50", "mAP50-95")):
        for r in rows:
            c = r["curve"]
            ax.plot([p["time_s"] / 60 for p in c], [p[key] for p in c], marker=".", label=r["name"])
        ax.set_xlabel("training minutes")
        ax.set_ylabel(f"val {key}")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a dataset with a train/val split")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each run")
    ap.add_argument("--epochs", type=int, default=None, help="a fixed number of epochs instead (sample efficiency)")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=["yolov4-tiny"], help="yolo4 zoo names")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="yolo4 TrainConfig option")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of every run (default: the idle cores)")
    ap.add_argument("--ultralytics-python", default=None, help="an interpreter with ultralytics installed")
    ap.add_argument("--ultralytics-model", default="yolov8n.yaml")
    ap.add_argument("--ultralytics-amp", default="default", choices=("default", "fp32", "bf16"))
    ap.add_argument("--skip-yolo4", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_real"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(
            f"bench_real: {args.data} not found (the kangaroo set lives in the project's shared data; give --data)"
        )
    from yolo4.training.demo import cpu_threads

    threads = args.threads or cpu_threads()
    machine = machine_line()
    print(f"bench_real: {args.data}, {threads} threads; {machine}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if not args.skip_yolo4:
        for model in args.models:
            rows.append(run_yolo4(model, args, threads, args.out / model))
            print(table(rows[-1:], args, threads, machine).splitlines()[-1])
    ul = run_ultralytics(args, threads, args.out / "ultralytics")
    if ul is not None:
        rows.append(ul)
    text = table(rows, args, threads, machine)
    print(text)
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "threads": threads, "runs": rows}, indent=1))
    if rows:
        plot_curves(rows, args.out / "curves.png", text.splitlines()[0])
        print(f"bench_real: {args.out / 'curves.png'}, {args.out / 'table.md'}")


if __name__ == "__main__":
    main()
