"""CPU back-ends side by side: one model, one input, every runtime at 1 thread and at all threads.

    rows = compare_backends("yolov4-tiny", weights=None, img_size=416, calib="data/")
    print(backends_table(rows))

Back-ends (each skipped with a note when its package is missing or it cannot run the model):
PyTorch as every command runs it on a CPU (`FAST_CPU`: BatchNorm folded, NHWC, float32) and in
bf16 (`--half`; CPUs with native bf16 only), onnxruntime float32 / int8, OpenVINO float32 / int8,
TFLite (ai-edge-litert, XNNPACK) float32 / int8, and OpenCV DNN reading the darknet
`.cfg` + `.weights` (the outside reference: what a darknet user runs on a CPU today).
Every exported file is written by `yolo4 export` itself into a temporary folder; int8 by
each runtime's own vendor's quantiser (onnxruntime's `quantize_static` for onnxruntime, whose
kernels fuse its QDQ layout; NNCF for OpenVINO; PT2E for TFLite). Timing: `warmup` calls each, then `repeats` rounds in which every back-end
runs once on the same random batch (round-robin, so that the machine's load changes hit all
alike); the median per back-end, in ms per image.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from yolo4.errors import Yolo4Error
from yolo4.export.common import ExportOptions
from yolo4.export.run import export_model

if TYPE_CHECKING:
    from yolo4.darknet import Darknet

BACKENDS = (
    "pytorch",
    "pytorch-bf16",
    "onnxruntime",
    "onnxruntime-int8",
    "openvino",
    "openvino-int8",
    "tflite",
    "tflite-int8",
    "opencv-darknet",
)
EXPORTS = {  # backend -> (format, int8 tool or None for float32, suffix); each runtime gets its own vendor's quantiser
    "onnxruntime": ("onnx", None, ".onnx"),
    "onnxruntime-int8": ("onnx", "onnxruntime", ".onnx"),
    "openvino": ("openvino", None, ".xml"),
    "openvino-int8": ("openvino", "nncf", ".xml"),
    "tflite": ("tflite", None, ".tflite"),
    "tflite-int8": ("tflite", "auto", ".tflite"),
}


@dataclass(frozen=True)
class BackendTiming:
    """ms per image of one back-end at `threads` threads (nan and a note when it could not run)."""

    backend: str
    threads: int
    ms: float
    note: str = ""


def _time_interleaved(
    makers: dict[str, Callable], x: np.ndarray, threads: int, batch: int, repeats: int, warmup: int
) -> list[BackendTiming]:
    """Median ms/img of every back-end at `threads` threads, timed round-robin (one call of each
    back-end per round), so that a change in the machine's load hits them all alike."""
    runners: dict[str, Callable[[], object]] = {}
    rows = []
    for backend, make in makers.items():
        try:
            runners[backend] = make(x, threads)
            for _ in range(warmup):
                runners[backend]()
        except Exception as e:  # a runtime failing on this model is a result to report, not a crash
            runners.pop(backend, None)
            rows.append(BackendTiming(backend, threads, float("nan"), f"{type(e).__name__}: {e}"[:160]))
    times: dict[str, list[float]] = {b: [] for b in runners}
    for _ in range(repeats):
        for backend, run in runners.items():
            if backend.startswith("pytorch"):
                torch.set_num_threads(threads)
            t = time.perf_counter()
            run()
            times[backend].append(time.perf_counter() - t)
    rows += [BackendTiming(b, threads, float(np.median(v)) * 1000.0 / batch) for b, v in times.items()]
    return rows


def _pytorch_runner(model, x: np.ndarray, threads: int, precision: str) -> Callable[[], object]:
    """The network as `yolo4 detect` runs it on this CPU (FAST_CPU), in `precision` (fp32 or bf16)."""
    from yolo4.inference.fastpath import FAST_CPU, FastNetwork

    net = FastNetwork(model, FAST_CPU.replace(precision=precision), torch.device("cpu"))
    torch.set_num_threads(threads)
    xt = net.input(torch.from_numpy(x))
    return lambda: net(xt)


def _opencv_runner(cfg: Path, weights: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    import cv2

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()

    def run():
        net.setInput(x)
        return net.forward(names)

    return run


def compare_backends(
    model,
    weights: str | os.PathLike | None = None,
    img_size: int | None = None,
    batch: int = 1,
    backends: Sequence[str] = BACKENDS,
    threads: Sequence[int] | None = None,
    calib: str | None = None,
    calib_count: int = 32,
    repeats: int = 20,
    warmup: int = 5,
    progress: bool = True,
) -> list[BackendTiming]:
    """Time `model` (zoo name, .cfg path or Darknet module) in every back-end.

    Args:
        weights: darknet weights (None: random weights, which time the network fairly).
        threads: thread counts to run each back-end with (default: 1 and all cores).
        calib: calibration data for the int8 back-ends (None: random images, timing only;
            the int8 files are then not meant for accuracy).
    Returns:
        one BackendTiming per (back-end, thread count), in `backends` order.
    """
    from yolo4.models import load_model

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise Yolo4Error(f"unknown back-end(s) {', '.join(unknown)} (choose from {', '.join(BACKENDS)})")
    net = (
        cast("Darknet", model) if isinstance(model, torch.nn.Module) else load_model(model, weights, img_size=img_size)
    )
    net = net.eval()
    h, w = (img_size, img_size) if img_size else net.input_hw
    threads = list(threads or sorted({1, os.cpu_count() or 1}))
    x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
    rows: list[BackendTiming] = []
    saved_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="yolo4-backends-") as tmp:
        folder = Path(tmp)
        calib_source = calib
        if calib is None and any(EXPORTS.get(b, ("", None, ""))[1] for b in backends):
            import cv2

            calib_source = str(folder / "random-calib")
            os.makedirs(calib_source)
            rng = np.random.default_rng(1)
            for i in range(8):
                cv2.imwrite(f"{calib_source}/{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        steps = list(backends)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="back-ends", unit="backend", leave=False)
        makers = {}
        for backend in steps:
            try:
                makers[backend] = _prepare(backend, net, folder, (h, w), batch, calib_source, calib_count)
            except (Yolo4Error, ImportError, RuntimeError) as e:
                note = str(e).splitlines()[0][:160]
                rows.extend(BackendTiming(backend, t, float("nan"), note) for t in threads)
        for t in threads:
            rows.extend(_time_interleaved(makers, x, t, batch, repeats, warmup))
    order = {b: k for k, b in enumerate(backends)}
    rows.sort(key=lambda r: (order[r.backend], r.threads))
    torch.set_num_threads(saved_threads)
    return rows


def _prepare(backend: str, net, folder: Path, hw: tuple[int, int], batch: int, calib: str | None, calib_count: int):
    """A factory (x, threads) -> zero-argument runner for `backend`, exporting the file it needs."""
    if backend.startswith("pytorch"):
        precision = "bf16" if backend == "pytorch-bf16" else "fp32"
        return lambda x, t: _pytorch_runner(net, x, t, precision)
    if backend == "opencv-darknet":
        import cv2  # noqa: F401

        from yolo4.export.darknet import opencv_problems

        problems = opencv_problems(net)
        if problems:
            raise Yolo4Error(f"OpenCV DNN cannot load this network: {problems[0]}")
        cfg = folder / "model.cfg"
        export_model(net, ExportOptions(format="darknet", img_size=hw), cfg)
        return lambda x, t: _opencv_runner(cfg, cfg.with_suffix(".weights"), x, t)
    fmt, tool, suffix = EXPORTS[backend]
    out = folder / f"{backend}{suffix}"
    int8 = tool is not None
    options = ExportOptions(
        format=fmt,
        img_size=hw,
        batch=batch,
        int8=int8,
        int8_tool=tool or "auto",
        calib=calib if int8 else None,
        calib_count=calib_count,
    )
    export_model(net, options, out)

    def make(x, t):
        from yolo4.inference.runtime import load_exported

        m = load_exported(out, threads=t)
        return lambda: m._run(x)

    return make


def backends_table(rows: Sequence[BackendTiming], reference: str = "opencv-darknet") -> str:
    """Markdown: one row per back-end, ms/img and the speed-up over `reference` per thread count."""
    threads = sorted({r.threads for r in rows})
    by = {(r.backend, r.threads): r for r in rows}
    head = "| back-end | " + " | ".join(f"ms/img ({t} thr) | vs {reference} ({t} thr)" for t in threads) + " |"
    lines = [head, "|---|" + "---|---|" * len(threads)]
    order = list(dict.fromkeys(r.backend for r in rows))
    notes = []
    for b in order:
        cells = []
        for t in threads:
            r, ref = by.get((b, t)), by.get((reference, t))
            if r is None or np.isnan(r.ms):
                cells += ["n/a", ""]
                if r is not None and r.note and r.note not in notes:
                    notes.append(f"{b}: {r.note}")
                continue
            speed = "" if ref is None or np.isnan(ref.ms) else f"{ref.ms / r.ms:.2f}x"
            cells += [f"{r.ms:.1f}", speed]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [f"\n{n}" for n in notes])
