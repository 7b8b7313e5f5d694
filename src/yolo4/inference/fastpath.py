"""The fast path: how the network of a `Detector` (and `yolo4 benchmark`) is run, in one place.

    speed = SpeedConfig.for_device(device)   # CUDA: FAST_CUDA below; CPU: FAST_CPU (folded, NHWC, fp32)
    net = FastNetwork(model, speed, device)  # a folded / cast / compiled copy; `model` is not touched
    heads = net(x)                           # x: Tensor[B, 3, H, W] from `upload`; float32 heads

One frozen `SpeedConfig` says what is done, and every command takes the same object
(`Detector(speed=...)`, `benchmark(speed=...)`, `run_detect`, `run_val`; on the command line
`--half`, `--compile MODE`, `--no-fuse`, `--eager`):

    precision       "fp32", "fp16" or "bf16": the (folded) network's weights and activations are
                    cast (as darknet's and Ultralytics' half-precision inference); the heads come
                    back as float32, so decoding and NMS always run in float32. fp16 is CUDA's;
                    bf16 on a CPU needs native bf16 (AVX-512 BF16 or AMX) and is refused without
                    it (emulated, it is 3-5x slower than fp32)
    fold_bn         BatchNorm folded into the convolutions (`fuse_conv_bn`)
    channels_last   NHWC weights and input (tensor cores and oneDNN prefer it)
    compile         "off" or a torch.compile mode: "default", "reduce-overhead" (CUDA graphs),
                    "max-autotune", "max-autotune-no-cudagraphs". Shapes are static
                    (dynamic=False): a smaller batch is padded to the largest batch seen so far,
                    so a run compiles once per input size and batch, and CUDA graphs replay.
                    Inductor's cache (TORCHINDUCTOR_CACHE_DIR, default ~/.cache/yolo4/inductor)
                    makes the next run's compile a cache hit. A compile that fails falls back
                    to eager with one warning, and so does a network past dynamo's limit of
                    compiled variants (raised to 64 per process), which dynamo alone would run
                    eagerly with a log line. On CUDA it also turns on cuDNN's autotuner
                    (torch.backends.cudnn.benchmark, a process-wide setting); on the CPU the
                    weights are frozen into the graph (Inductor's `freezing`: oneDNN's
                    pre-packed weights: 1.4-2.4x eager fp32, where unfrozen gained 1.1-1.2x).
    async_upload    (CUDA) images go to the GPU from pinned host memory without blocking
                    (`upload`), and the Detector times its stages with CUDA events instead of
                    synchronising: no host synchronisation between pre-processing and NMS
    batched_nms     one NMS call for a whole batch (`yolo4.ops.nms.batched_postprocess`)

`FAST_CUDA` (fp16, folded, channels_last, compiled with "reduce-overhead", async upload,
batched NMS) is the default on CUDA; `FAST_CPU` (fp32, folded, channels_last: the same heads
within 2e-6 of their scale, 1.2-1.9x eager) on the CPU; `EAGER` (what PyTorch does with the
module as it is) is `--eager`, and the default on other devices. The compile mode of FAST_CUDA
is the one `benchmarks/bench_gpu.py` is written to choose by measurement; until a GPU run has measured it, it is the mode that
removes per-kernel launch cost (CUDA graphs), the usual bottleneck of batch-1 detection.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from yolo4.darknet.network import Conv, Darknet
from yolo4.errors import Yolo4Error
from yolo4.inference.device import native_bf16
from yolo4.inference.speed import COMPILE_MODES, EAGER, FAST_CPU, FAST_CUDA, SpeedConfig

__all__ = [
    "COMPILE_MODES",
    "EAGER",
    "FAST_CPU",
    "FAST_CUDA",
    "PRECISIONS",
    "FastNetwork",
    "SpeedConfig",
    "fuse_conv_bn",
    "upload",
]

# the torch dtype of each of speed.PRECISION_NAMES
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def fuse_conv_bn(model: Darknet) -> Darknet:
    """Fold every BatchNorm into its convolution (in place, eval mode only); returns `model`.

    y = gamma * (W x - mean) / sqrt(var + eps) + beta  ==  W' x + b'  (torch's fuse_conv_bn_eval).
    """
    if model.training:
        raise ValueError("fuse_conv_bn needs an eval-mode model (BatchNorm statistics are frozen)")
    for block in model.blocks:
        if isinstance(block, Conv) and isinstance(block.bn, nn.BatchNorm2d):
            block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), nn.Identity()
    return model


def _compiling(device: torch.device) -> contextlib.ExitStack:
    """The settings a compiled call runs under. A network past dynamo's limit of variants raises
    (caught by the caller: a warning, then eager) instead of running eagerly behind a log line.
    On the CPU, Inductor compiles with the weights as constants (`freezing`, inference only:
    oneDNN pre-packs them once instead of on every call)."""
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    stack = contextlib.ExitStack()
    stack.enter_context(dynamo_config.patch(fail_on_recompile_limit_hit=True))
    if device.type == "cpu":
        stack.enter_context(inductor_config.patch(freezing=True))
    return stack


def _allow_recompiles(limit: int = 64) -> None:
    """Every compiled Darknet shares one `forward`, whose variants (one per network, input size,
    batch, dtype) count against dynamo's per-function limit (8): a process that compiles several
    models (`yolo4 val` of several, a benchmark) gets `limit` variants instead (a process-wide
    setting)."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, limit)


def _set_compile_cache() -> None:
    """Inductor's on-disk cache in a folder that outlives /tmp clean-ups, unless the user chose one."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "yolo4" / "inductor"))


class FastNetwork:
    """A module run the `SpeedConfig` way. Called with Tensor[B, 3, H, W] (any dtype and layout;
    `upload` gives the right ones), returns one float32 Tensor[B, A*(5+C), H_i, W_i] per head.

    The module is copied before it is folded, cast or laid out, unless `owned` says the caller
    gives it away (the Detector's own freshly loaded network): a training model handed to
    validation is never changed.
    """

    def __init__(self, model: nn.Module, speed: SpeedConfig, device: torch.device, owned: bool = False):
        self.speed = speed.on(torch.device(device).type)
        self.device = torch.device(device)
        if self.device.type == "cpu" and self.speed.precision == "bf16" and not native_bf16():
            raise Yolo4Error(
                "bf16 (--half on a CPU) needs native bf16 (lscpu flags avx512_bf16 or amx_bf16), which this CPU "
                "lacks: emulated it is 3-5x slower than fp32; leave --half out"
            )
        changes = self.speed.fold_bn or self.speed.channels_last or self.speed.precision != "fp32"
        net = copy.deepcopy(model) if changes and not owned else model
        net = net.to(self.device).eval()
        if self.speed.fold_bn and isinstance(net, Darknet):
            net = fuse_conv_bn(net)
        net = net.to(PRECISIONS[self.speed.precision])
        if self.speed.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.device.type == "cuda" and self.speed.compile != "off":
            torch.backends.cudnn.benchmark = True  # static shapes: cuDNN's fastest algorithm per layer, found once
        self.module = net
        self._run: Callable[[Tensor], Any] = net
        self._largest = 0  # the largest batch seen: smaller ones are padded to it (static shapes)
        if self.speed.compile != "off":
            _set_compile_cache()
            _allow_recompiles()
            mode = None if self.speed.compile == "default" else self.speed.compile
            self._run = torch.compile(net, mode=mode, dynamic=False)

    @property
    def compiled(self) -> bool:
        return self._run is not self.module

    def input(self, x: Tensor) -> Tensor:
        """`x` on the device in the network's dtype and memory layout (a no-op for `upload`'s output)."""
        return x.to(self.device, PRECISIONS[self.speed.precision], non_blocking=True).contiguous(
            memory_format=self._format()
        )

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> list[Tensor]:
        x = self.input(x)
        n = x.shape[0]
        if not self.compiled:
            return [o.float() for o in self.module(x)]
        self._largest = max(self._largest, n)
        if n < self._largest:  # pad to the compiled batch: no recompile, the same CUDA graph
            pad = x.new_zeros((self._largest - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=self._format())
        try:
            if self.speed.compile in ("reduce-overhead", "max-autotune"):
                torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are ours (copied)
            with _compiling(self.device):
                outs = self._run(x)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001  (a compiler that cannot build: run eager instead)
            warnings.warn(
                f"torch.compile({self.speed.compile}) failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "running the network eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            self._run = self.module
            outs = self.module(x)
        # a copy: CUDA graphs overwrite their outputs on the next replay; float32 for decoding
        return [o[:n].to(torch.float32, copy=True) for o in outs]

    def _format(self) -> torch.memory_format:
        return torch.channels_last if self.speed.channels_last else torch.contiguous_format


def upload(images: np.ndarray | Sequence[np.ndarray], device: torch.device, speed: SpeedConfig) -> Tensor:
    """RGB uint8 images (B, H, W, 3) (one array or equal-sized arrays) -> Tensor[B, 3, H, W] in
    [0, 1] on `device`, in `speed`'s dtype and layout.

    With `speed.async_upload` on CUDA the uint8 pixels are written straight into pinned host
    memory and copied without blocking (a quarter of the bytes of float32); the conversion to
    float and the division run on the GPU. The (B, H, W, 3) -> (B, 3, H, W) permute is a view
    that is already channels_last, so NHWC costs no copy.
    """
    device = torch.device(device)
    if speed.async_upload and device.type == "cuda":
        host = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=True)  # cached by torch
        np.stack(list(images), out=host.numpy())
        pixels = host.to(device, non_blocking=True)
    else:
        pixels = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).to(device)
    x = pixels.permute(0, 3, 1, 2).to(PRECISIONS[speed.precision]).div_(255.0)  # (B, 3, H, W), NHWC in memory
    fmt = torch.channels_last if speed.channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
