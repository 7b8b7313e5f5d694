"""Speed of a network: milliseconds per image and FPS, without and with post-processing.

    result = benchmark("yolov4-tiny", img_size=416, batch=1, device="cpu")
    print(result.summary())
    benchmark("model_int8.onnx")       # an exported file, in its runtime (onnxruntime / LiteRT, CPU)

The network is timed on random input after a warm-up (the seeds report FPS "without
post-processing"); decoding + NMS are timed separately on the head outputs, so both figures
come from one run. Timing is `torch.utils.benchmark.Timer` (CUDA synchronisation, the
process's thread count), one measurement per iteration, the median reported. Darknet's rule of thumb (40% of the device's peak TFLOPS spent
on the model's BFLOPs) is printed beside the measurement.

The network runs as `yolo4.inference.fastpath.FastNetwork` with a `SpeedConfig`, the same
object and defaults as `yolo4 detect` and `yolo4 val` (on CUDA the fast path: fp16, BatchNorm
folded, channels_last, compiled; on the CPU eager float32 with BatchNorm folded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.benchmark import Measurement, Timer

from yolo4.darknet.network import Darknet, infer_shapes
from yolo4.errors import Yolo4Error
from yolo4.inference.device import select_device
from yolo4.inference.fastpath import EAGER, PRECISIONS, FastNetwork, SpeedConfig, fuse_conv_bn
from yolo4.ops.nms import DETECT_POSTPROCESS, PostprocessConfig

__all__ = ["BenchResult", "benchmark", "fuse_conv_bn"]


@dataclass(frozen=True)
class BenchResult:
    model: str
    device: str
    batch: int
    input_hw: tuple[int, int]
    dtype: str
    bflops: float  # darknet's count, per image
    network_ms: float  # per image, median over iterations
    postprocess_ms: float  # decode + NMS per image
    iters: int
    speed: str = ""  # SpeedConfig.describe() of the run ("" for an exported file)

    @property
    def fps_network(self) -> float:
        return 1000.0 / self.network_ms

    @property
    def fps_total(self) -> float:
        return 1000.0 / (self.network_ms + self.postprocess_ms)

    def rule_of_thumb_fps(self, peak_tflops: float) -> float:
        """darknet's estimate: 40% of `peak_tflops` spent on this model's BFLOPs."""
        return 0.4 * peak_tflops * 1e3 / self.bflops

    def summary(self) -> str:
        h, w = self.input_hw
        return (
            f"{self.model} {w}x{h} batch {self.batch} {self.dtype} on {self.device}: "
            f"network {self.network_ms:.2f} ms/img ({self.fps_network:.1f} FPS), "
            f"+ decode/NMS {self.postprocess_ms:.2f} ms/img ({self.fps_total:.1f} FPS with post-processing), "
            f"{self.bflops:.3f} BFLOPs/img" + (f" [{self.speed}]" if self.speed else "")
        )


def _median_s(timer: Timer, iters: int, warmup: int) -> float:
    """Median seconds of one run of `timer`'s statement over `iters` runs after `warmup` runs."""
    for _ in range(warmup):
        timer.timeit(1)
    (merged,) = Measurement.merge([timer.timeit(1) for _ in range(max(1, iters))])
    return float(merged.median)


def benchmark(
    model: str | os.PathLike | Darknet,
    weights: str | os.PathLike | None = None,
    img_size: int | None = None,
    batch: int = 1,
    device: str | torch.device = "auto",
    iters: int = 20,
    warmup: int = 3,
    speed: SpeedConfig | None = None,
    postprocess: PostprocessConfig = DETECT_POSTPROCESS,
    runtime: str = "auto",
) -> BenchResult:
    """Time the network and its post-processing (decode + `postprocess`).

    Args:
        model: a zoo name, a .cfg path, a built Darknet, or an exported .onnx / .tflite file
            (timed in its own runtime on the CPU, at its exported size; no weights, no speed).
        weights: darknet weights; without them the network is random, which times the network
            fairly but makes post-processing unrepresentative (random scores hover near conf).
        img_size: square input size; default the model's [net] size.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N".
        speed: precision, BatchNorm folding, channels_last, compile, batched NMS (a `SpeedConfig`;
            default `SpeedConfig.for_device(device)`, as every command).
        postprocess: the settings post-processing is timed at (default `DETECT_POSTPROCESS`).
        runtime: what runs an exported file: "auto" (the fastest installed, said on stderr) or one of
            `yolo4.inference.runtime.RUNTIMES`; "auto" or "pytorch" for darknet models (`resolve_runtime`).
    Returns:
        BenchResult with median per-image milliseconds.
    """
    from yolo4.inference.runtime import ExportedModel, is_exported, load_exported, resolve_runtime
    from yolo4.models.zoo import load_model
    from yolo4.ops.boxes import DecodedHeads, decode_heads
    from yolo4.ops.nms import batched_postprocess
    from yolo4.ops.nms import postprocess as run_postprocess

    name = (
        os.fspath(model)
        if isinstance(model, (str, os.PathLike))
        else getattr(getattr(model, "spec", None), "source", str(model))
    )
    chosen = resolve_runtime(model, runtime, announce=True)
    dev = select_device(device)
    if isinstance(model, (str, os.PathLike)) and is_exported(model):
        given = [
            flag
            for flag, on in (("--weights", weights is not None), ("--half/--compile", speed not in (None, EAGER)))
            if on
        ]
        if given:
            raise Yolo4Error(f"{model}: {', '.join(given)} apply to darknet models, not to an exported file")
        net: Darknet | ExportedModel = load_exported(model, runtime=chosen)
        if img_size and (img_size, img_size) != tuple(net.input_hw):
            raise Yolo4Error(f"{model}: exported at {net.input_hw[1]}x{net.input_hw[0]}, not --img-size {img_size}")
        if dev.type != "cpu" and device != "auto":
            raise Yolo4Error(f"{model}: exported files run in their runtime on the CPU, not on --device {device}")
        dev = torch.device("cpu")
    else:
        net = model if isinstance(model, Darknet) else load_model(model, weights)
    net = net.eval()
    if img_size:
        h = w = int(img_size)
    else:
        h, w = net.input_hw
    if isinstance(net, Darknet):
        speed = (speed or SpeedConfig.for_device(dev)).on(dev)
        fast = FastNetwork(net, speed, dev, owned=not isinstance(model, Darknet))
        runner: FastNetwork | ExportedModel = fast
        x = fast.input(torch.rand(batch, net.spec.net.channels, h, w))
    else:
        speed, runner = EAGER, net
        x = torch.rand(batch, net.spec.net.channels, h, w)
    nms = batched_postprocess if speed.batched_nms else run_postprocess
    beta = float(net.yolo_layers[-1].beta_nms) if net.yolo_layers else 0.6
    bflops = sum(i.bflops for i in infer_shapes(net.spec, (h, w)))

    threads = torch.get_num_threads()  # Timer's default is 1 thread
    with torch.inference_mode():
        net_s = _median_s(Timer("runner(x)", globals={"runner": runner, "x": x}, num_threads=threads), iters, warmup)
        outs = runner(x)
        if not isinstance(outs, DecodedHeads):  # an export may decode in its graph
            outs = [o.float() for o in outs]

        def post() -> None:
            dec = outs if isinstance(outs, DecodedHeads) else decode_heads(outs, net.yolo_layers, (h, w))
            nms(dec.boxes, dec.objectness, dec.class_probs, postprocess, beta=beta)

        post_s = _median_s(Timer("post()", globals={"post": post}, num_threads=threads), iters, warmup)
    return BenchResult(
        name,
        f"cpu ({net.runtime})" if isinstance(net, ExportedModel) else str(dev),
        batch,
        (h, w),
        str(PRECISIONS[speed.precision]).replace("torch.", ""),
        bflops,
        net_s * 1000 / batch,
        post_s * 1000 / batch,
        iters,
        speed.describe() if isinstance(net, Darknet) else "",
    )
