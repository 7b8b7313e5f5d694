"""The proof of `yolo4 tune` on a small real dataset: a genetic search of short trials, then the
defaults and the best evolved configuration each trained for the full budget, side by side, and
scored on the val split.

    python benchmarks/bench_tune.py      # kangaroo (../shared), yolo-fastest-1.1 (COCO) fine-tuned at 256 px
    python benchmarks/bench_tune.py --trials 16 --epochs-per-trial 8 --epochs 30 --out runs/bench_tune
    python benchmarks/bench_tune.py --model yolov4-tiny --weights none      # from scratch

Both full trainings run at the same time, one core (torch thread) each, from configs written the
same way (`defaults.yaml`: the search's trial 0, i.e. the defaults at run time with this script's
options; `best.yaml`: the best trial), so that only the evolved fields differ. Run the same
command again after a stop: the search and both trainings resume where they were.

The search scores its trials on the same val split the comparison reports (as PyTorch_YOLOv4's
--evolve and Ultralytics' tune do): a small val split flatters the tuned side a little.

Prints the machine, the trial table, and for each configuration mAP50 and mAP50-95 on the val
split at its best epoch (the one best.pt keeps) and at its last epoch; writes table.md and
results.json in --out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
DEFAULT_DATA = SHARED / "datasets" / "kangaroo"
DEFAULT_MODEL = SHARED / "reference" / "models" / "yolo-fastest-1.1.cfg"


def machine_line() -> str:
    """CPU model, its widest vector ISA, the core count and the load (other jobs share it)."""
    from yolo4.inference.device import cpu_description

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_description()}, load average {load:.1f}"


def train_both(configs: dict[str, Path], epochs: int, out: Path) -> dict[str, float]:
    """`yolo4 train --config C --epochs N` for each config at once (one thread each), each resumed
    when its folder holds a last.pt. Returns the wall minutes of each."""
    procs, t0, minutes = {}, time.time(), {}
    with contextlib.ExitStack() as logs:
        for name, config in configs.items():
            run = out / name
            if (run / "results.csv").exists() and _epochs_done(run) >= epochs:
                continue
            if (run / "last.pt").exists():
                argv = ["train", "--resume", str(run), "--set", "threads=1"]
            else:
                argv = ["train", "--config", str(config), "--epochs", str(epochs), "--out", str(run)]
                argv += ["--set", "threads=1", "--set", "progress=false"]
            log = logs.enter_context(open(out / f"{name}.log", "a"))
            procs[name] = subprocess.Popen([sys.executable, "-m", "yolo4", *argv], stdout=log, stderr=log)
            print(f"training {name}: yolo4 {' '.join(argv)} (log: {out / f'{name}.log'})", flush=True)
        for name, proc in procs.items():
            if proc.wait() != 0:
                sys.exit(f"training {name} failed: see {out / f'{name}.log'}")
            minutes[name] = (time.time() - t0) / 60
    return minutes


def _epochs_done(run: Path) -> int:
    with open(run / "results.csv", newline="") as f:
        return len(list(csv.DictReader(f)))


def scores(run: Path) -> dict[str, float]:
    """mAP50 and mAP50-95 on the val split at the best epoch (best fitness, as best.pt) and the last."""
    with open(run / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/mAP50")]
    fit = [0.1 * float(r["val/mAP50"]) + 0.9 * float(r["val/mAP50-95"]) for r in rows]
    best = rows[max(range(len(rows)), key=fit.__getitem__)]
    last = rows[-1]
    return {
        "epochs": int(last["epoch"]),
        "best_epoch": int(best["epoch"]),
        "mAP50": float(best["val/mAP50"]),
        "mAP50-95": float(best["val/mAP50-95"]),
        "last_mAP50": float(last["val/mAP50"]),
        "last_mAP50-95": float(last["val/mAP50-95"]),
    }


def trial_table(search: Path, start: dict) -> list[str]:
    """tune.csv as Markdown: each trial's scores and the fields it changed from the defaults."""
    with open(search / "tune.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["| trial | from | status | epochs | fitness | mAP50 | mAP50-95 | min | changed from the defaults |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        changed = ", ".join(f"{k} {r[k]}" for k in start if r[k] != start[k])
        minutes = f"{float(r['time_s']) / 60:.1f}" if r["time_s"] else ""
        lines.append(
            f"| {r['trial']} | {r['parents'] or '-'} | {r['status']} | {r['epochs']} | {r['fitness']} | {r['mAP50']} "
            f"| {r['mAP50-95']} | {minutes} | {changed or '(the defaults)'} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--weights", default=None, help="default: the .weights beside a .cfg model; 'none': from scratch")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs-per-trial", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30, help="the full budget of both final trainings")
    ap.add_argument("--backend", default="auto", choices=("auto", "ray", "local"))
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="runs/bench_tune")
    args = ap.parse_args()

    import yolo4
    from yolo4.tuning.record import best_config_entries, write_best_yaml

    if not Path(args.data).exists():
        sys.exit(f"no dataset at {args.data} (the project's shared data): give --data")
    weights = args.weights
    if weights is None and args.model.endswith(".cfg") and Path(args.model).with_suffix(".weights").exists():
        weights = str(Path(args.model).with_suffix(".weights"))
    weights = None if weights in (None, "none") else weights
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_line(), flush=True)
    t0 = time.time()
    for attempt in range(1, 6):  # a search that stops (Ray's memory monitor on a shared machine) resumes
        result = yolo4.tune(
            args.data,
            model=args.model,
            weights=weights,
            img_size=args.img_size,
            batch=args.batch,
            options=args.options,
            trials=args.trials,
            epochs_per_trial=args.epochs_per_trial,
            backend=args.backend,
            out=out / "search",
        )
        if result.stopped is None:
            break
        print(f"search stopped ({result.stopped}): resuming, attempt {attempt + 1}", flush=True)
    search_min = (time.time() - t0) / 60
    if result.best is None:
        sys.exit("no trial finished: nothing to compare")
    trials = result.trials
    defaults = next(t for t in trials if t.index == 0)
    configs = {"defaults": out / "defaults.yaml", "tuned": out / "tuned.yaml"}
    write_best_yaml(configs["defaults"], result.base, defaults, args.epochs_per_trial, len(trials))
    write_best_yaml(configs["tuned"], result.base, result.best, args.epochs_per_trial, len(trials))
    minutes = train_both(configs, args.epochs, out)

    start = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in defaults.params.items()}
    table = trial_table(out / "search", start)
    both = {name: scores(out / name) for name in configs}
    lines = [
        f"machine: {machine_line()}",
        f"data {args.data}, model {Path(args.model).name} (weights {Path(weights).name if weights else 'none'}), "
        f"{args.img_size} px, batch {args.batch}",
        f"search: {len(trials)} trials of {args.epochs_per_trial} epochs, {result.backend}, {search_min:.0f} min "
        f"this session; full budget: {args.epochs} epochs each",
        "",
        "| config | epochs | best epoch | mAP50 | mAP50-95 | last epoch mAP50 | last epoch mAP50-95 | min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in both.items():
        lines.append(
            f"| {name} | {s['epochs']} | {s['best_epoch']} | {s['mAP50']:.4f} | {s['mAP50-95']:.4f} | "
            f"{s['last_mAP50']:.4f} | {s['last_mAP50-95']:.4f} | {minutes.get(name, float('nan')):.0f} |"
        )
    lines += ["", "best trial's fields against the defaults:", ""]
    lines += ["| field | defaults | tuned |", "|---|---|---|"]
    lines += [f"| {k} | {defaults.params[k]} | {result.best.params[k]} |" for k in defaults.params]
    lines += ["", *table]
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    entries = best_config_entries(result.base, result.best)
    (out / "results.json").write_text(
        json.dumps({"scores": both, "best": entries, "trial": result.best.index, "machine": machine_line()}, indent=1)
    )


if __name__ == "__main__":
    main()
