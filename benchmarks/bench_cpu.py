"""PyTorch on the CPU: every speed setting side by side, and what each costs in accuracy.

    python benchmarks/bench_cpu.py --out benchmarks/results/cpu               # speed + yolo-fastest-1.1
    python benchmarks/bench_cpu.py --cfg best.cfg --weights best.weights --data ../shared/datasets/kangaroo
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_cpu.py   # an AVX2 machine's kernels

The settings (`yolo4.inference.speed`), as `yolo4 detect|val|benchmark` names them:

    eager fp32          --eager: the module as it is (plain PyTorch)
    default             FAST_CPU, what every command does on a CPU: BatchNorm folded, NHWC, fp32
    compiled            --compile: torch.compile with the weights frozen into the graph
    bf16                --half on a CPU with native bf16 (AVX-512 BF16 or AMX; skipped without it)
    bf16 compiled       --half --compile

1. Speed: for each model, batch 1 and `--batch`, the network alone (random input), every setting
   once per round, round-robin (load changes hit all alike), median of `--rounds` rounds; ratios
   against eager fp32; the first call's seconds (the compile, with a cold Inductor cache unless
   `--warm-cache`); the heads' largest difference from eager fp32 relative to their scale.
2. Accuracy on real photos: yolo-fastest-1.1 (COCO-trained, ../shared/reference) on darknet's
   sample photos + the kangaroo val split, each setting's detections (conf 0.001) scored against
   eager fp32's (conf 0.25) as ground truth (agreement mAP50), and how many of those survive
   (same class, IoU >= 0.7, conf 0.25), as `bench_export.py` scores int8 files.
3. With `--cfg/--weights/--data`: mAP50 and mAP50-95 of a trained model on its val split per
   setting (`yolo4 val`'s post-processing).

Writes `<out>/cpu_table.md`, `<out>/cpu_results.json` and `<out>/cpu_speed.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_export import KANGAROO, REFERENCE, agreement, real_photos
from yolo4.darknet import load
from yolo4.evaluation.evaluate import predict_dataset
from yolo4.evaluation.metrics import coco_evaluate, paired_bootstrap
from yolo4.inference.detector import Detector
from yolo4.inference.device import cpu_description, native_bf16
from yolo4.inference.fastpath import EAGER, FAST_CPU, FastNetwork, SpeedConfig
from yolo4.models.zoo import load_model
from yolo4.ops.nms import DETECT_POSTPROCESS, VAL_POSTPROCESS

MODELS = (("yolov4-tiny", 416), ("yolov4-csp-leaky", 448), ("yolov4", 416))


def settings(compiled: bool = True) -> dict[str, SpeedConfig]:
    """label -> SpeedConfig; the bf16 rows only where this CPU has native bf16."""
    rows = {"eager fp32": EAGER, "default": FAST_CPU, "compiled": FAST_CPU.replace(compile="default")}
    if native_bf16():
        rows["bf16"] = FAST_CPU.replace(precision="bf16")
        rows["bf16 compiled"] = FAST_CPU.replace(precision="bf16", compile="default")
    return {k: v for k, v in rows.items() if compiled or v.compile == "off"}


def machine() -> str:
    """The CPU and its vector extensions, and the ISA cap when one is set (AVX2 emulation)."""
    caps = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ]
    return cpu_description() + (f", run as {' '.join(caps)}" if caps else "")


def speed_rows(model_name: str, size: int, batch: int, rounds: int, network=None, compiled: bool = True) -> list[dict]:
    """Round-robin timing of every setting on one model (random weights unless `network` is given)."""
    model = network if network is not None else load_model(model_name, img_size=size)
    model = model.eval()
    x = torch.rand(batch, 3, size, size)
    nets, first_s = {}, {}
    for label, speed in settings(compiled).items():
        t = time.perf_counter()
        nets[label] = FastNetwork(model, speed, torch.device("cpu"))
        nets[label](x)  # the compile, for the compiled rows
        first_s[label] = time.perf_counter() - t
        nets[label](x)
    ref = nets["eager fp32"](x)
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(rounds):
        for label, net in nets.items():
            t = time.perf_counter()
            net(x)
            times[label].append(time.perf_counter() - t)
    eager_ms = float(np.median(times["eager fp32"])) * 1e3 / batch
    rows = []
    for label, net in nets.items():
        out = net(x)
        err = max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(out, ref))
        ms = float(np.median(times[label])) * 1e3 / batch
        rows.append(
            {
                "model": model_name,
                "input": size,
                "batch": batch,
                "setting": label,
                "describe": net.speed.describe(),
                "ms_per_img": ms,
                "vs_eager": eager_ms / ms,
                "first_call_s": first_s[label],
                "heads_max_rel_diff": err,
            }
        )
        print(f"{model_name} {size} b{batch} {label:14s} {ms:8.2f} ms/img x{eager_ms / ms:.2f}", file=sys.stderr)
    return rows


def reference_rows() -> list[dict]:
    """yolo-fastest-1.1 on real photos: each setting's detections against eager fp32's."""
    models = REFERENCE / "models"
    if not (models / "yolo-fastest-1.1.weights").is_file():
        print(f"skipped yolo-fastest-1.1: {models} is absent", file=sys.stderr)
        return []
    model = load(models / "yolo-fastest-1.1.cfg", models / "yolo-fastest-1.1.weights")
    names = [n.strip() for n in (models / "coco.names").read_text().splitlines() if n.strip()]
    _, images, notes = real_photos(REFERENCE, KANGAROO)
    for note in notes:
        print(note, file=sys.stderr)
    common = {"names": names, "img_size": 320, "resize": "stretch", "device": "cpu"}
    truth_det = Detector(model, postprocess=DETECT_POSTPROCESS, speed=EAGER, **common)
    truth = [(r.boxes, r.class_ids) for r in truth_det.predict_batch(images)]
    rows = []
    for label, speed in settings().items():
        det = Detector(model, postprocess=DETECT_POSTPROCESS.replace(conf=0.001), speed=speed, **common)
        preds = [(r.boxes, r.scores, r.class_ids) for r in det.predict_batch(images)]
        row = {"model": "yolo-fastest-1.1", "setting": label, **agreement(truth, preds, names), "images": len(images)}
        rows.append(row)
        print(f"yolo-fastest-1.1 {label:14s} agreement {row['agreement_map50']:.4f}", file=sys.stderr)
    return rows


def trained_rows(cfg: Path, weights: Path, data: Path, split: str) -> list[dict]:
    """A trained model's mAP on `split` (val, or all: train + val) per setting, and the 95%
    paired-bootstrap interval of each setting's mAP50 difference from eager fp32."""
    from yolo4.data.dataset import load_dataset
    from yolo4.training.validation import readable_subset

    model = load(cfg, weights)
    images, unreadable = readable_subset(load_dataset(data, split, progress=False))
    for problem in unreadable:
        print(f"left out: {problem}", file=sys.stderr)
    names = list(images.names)
    rows, reference = [], None
    for label, speed in settings().items():
        det = Detector(model, names=names, postprocess=VAL_POSTPROCESS, device="cpu", speed=speed)
        r = predict_dataset(det, images, batch_size=8, progress=False)
        m = coco_evaluate(r.gts, r.preds, names, image_sizes=r.sizes)
        reference = reference or r.preds
        _, lo, hi = paired_bootstrap(r.gts, reference, r.preds, len(names))
        row = {
            "model": f"{cfg.parent.name}/{cfg.name}",
            "setting": label,
            "map50": m.map50,
            "map": m.map,
            "images": len(r.gts),
        }
        rows.append({**row, "split": split, "boxes": int(sum(len(c) for _, c in r.gts)), "delta_interval": [lo, hi]})
        print(f"{cfg.stem} {label:14s} mAP50 {m.map50:.4f} mAP50-95 {m.map:.4f}", file=sys.stderr)
    return rows


def table(speed: list[dict], reference: list[dict], trained: list[dict], header: str) -> str:
    lines = [header]
    if speed:
        lines += [
            "",
            "| model | input | batch | setting | ms/img | vs eager fp32 | first call s | heads' max rel. diff |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
    for r in speed:
        lines.append(
            f"| {r['model']} | {r['input']} | {r['batch']} | {r['setting']} | {r['ms_per_img']:.1f} | "
            f"{r['vs_eager']:.2f}x | {r['first_call_s']:.1f} | {r['heads_max_rel_diff']:.1e} |"
        )
    if reference:
        n = reference[0]
        lines += [
            "",
            f"yolo-fastest-1.1 on {n['images']} real photos against eager fp32's {n['truth_boxes']} detections:",
            "",
            "| setting | agreement mAP50 | surviving |",
            "|---|---|---|",
        ]
        lines += [
            f"| {r['setting']} | {r['agreement_map50']:.4f} | {r['surviving']}/{r['truth_boxes']} |" for r in reference
        ]
    if trained:
        base = trained[0]
        lines += [
            "",
            f"{base['model']} on its {base['split']} split ({base['images']} images, {base['boxes']} boxes):",
            "",
        ]
        lines += ["| setting | mAP50 | mAP50-95 | ΔmAP50 [95% interval] | ΔmAP50-95 |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['setting']} | {r['map50']:.4f} | {r['map']:.4f} | {100 * (r['map50'] - base['map50']):+.2f} "
            f"[{100 * r['delta_interval'][0]:+.1f}, {100 * r['delta_interval'][1]:+.1f}] | "
            f"{100 * (r['map'] - base['map']):+.2f} |"
            for r in trained
        ]
    return "\n".join(lines) + "\n"


def plot(speed: list[dict], path: Path, header: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["model"], r["input"], r["batch"]) for r in speed))
    labels = list(dict.fromkeys(r["setting"] for r in speed))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ys = [next((r["vs_eager"] for r in speed if (r["model"], r["input"], r["batch"]) == g and r["setting"] == label), 0)
              for g in groups]  # fmt: skip
        xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, ys, width, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(groups)), [f"{m}\n{s} px, batch {b}" for m, s, b in groups], fontsize=8)
    ax.set_ylabel("speed vs eager fp32 (x)")
    ax.set_title(header, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu"))
    p.add_argument(
        "--models", nargs="*", default=None, help="zoo names at 416 (default: tiny 416, csp-leaky 448, yolov4 416)"
    )
    p.add_argument("--batch", type=int, default=8, help="the second batch size timed (besides 1)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--warm-cache", action="store_true", help="keep Inductor's cache (default: a cold, temporary one)")
    p.add_argument("--skip-reference", action="store_true", help="no yolo-fastest-1.1 accuracy")
    p.add_argument("--skip-speed", action="store_true", help="accuracy only")
    p.add_argument("--cfg", type=Path, default=None, help="a trained model's cfg (with --weights and --data)")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument(
        "--split", choices=("val", "all"), default="val", help="--data: the images scored (all: train + val)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="a tiny run for CI: yolov4-tiny at 64 px, no compile, no accuracy"
    )
    a = p.parse_args()
    if a.smoke:
        a.models, a.rounds, a.batch, a.skip_reference, a.cfg = ["yolov4-tiny"], 2, 2, True, None
    if a.threads:
        torch.set_num_threads(a.threads)
    if not a.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_cpu_inductor_")
    header = (
        f"{machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'cold' if not a.warm_cache else 'warm'} compile cache, median of {a.rounds} rounds"
    )
    print(header, file=sys.stderr)
    runs = [(m, 64 if a.smoke else 416) for m in a.models] if a.models else list(MODELS)
    speed = []
    for name, size in [] if a.skip_speed else runs:
        for batch in dict.fromkeys((1, a.batch)):
            speed += speed_rows(name, size, batch, a.rounds, compiled=not a.smoke)
    models = REFERENCE / "models"
    if (models / "yolo-fastest-1.1.cfg").is_file() and not (a.smoke or a.skip_speed):
        real = load(models / "yolo-fastest-1.1.cfg", models / "yolo-fastest-1.1.weights")
        speed += speed_rows("yolo-fastest-1.1", 320, 1, a.rounds, network=real)
    reference = [] if a.skip_reference else reference_rows()
    trained = trained_rows(a.cfg, a.weights, a.data, a.split) if a.cfg and a.weights and a.data else []
    a.out.mkdir(parents=True, exist_ok=True)
    text = table(speed, reference, trained, header)
    (a.out / "cpu_table.md").write_text(text)
    (a.out / "cpu_results.json").write_text(
        json.dumps({"machine": header, "speed": speed, "reference": reference, "trained": trained}, indent=1)
    )
    if speed:
        plot(speed, a.out / "cpu_speed.png", header)
    print(text)


if __name__ == "__main__":
    main()
