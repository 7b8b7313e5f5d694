"""Which device a command runs on: one rule for every command and the Python API."""

from __future__ import annotations

import functools
import os
import platform

import torch

from yolo4.errors import Yolo4Error

DEVICE_HELP = "auto (default: CUDA when PyTorch sees a GPU, else CPU), cpu, cuda or cuda:N"


def select_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` -> CUDA when PyTorch sees a GPU (this process's LOCAL_RANK under torchrun), else CPU.

    Any other name is taken as a torch device ("cpu", "cuda", "cuda:1", ...); a CUDA device
    without CUDA raises Yolo4Error rather than silently running elsewhere.
    """
    if isinstance(name, torch.device):
        dev = name
    else:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise Yolo4Error(f"unknown device '{name}' (use {DEVICE_HELP})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Yolo4Error(f"device '{dev}' was asked for but PyTorch sees no CUDA device (use --device cpu)")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below the first with bf16 arithmetic (AVX512_CORE_BF16)
_NO_BF16_ISA = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX on x86, BF16 on Arm:
    oneDNN's bf16 kernels, 2-4x float32's speed).

    PyTorch's own check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) also says yes on every
    AVX-512 CPU without bf16 (Skylake, Cascade Lake, Ice Lake), where oneDNN emulates bf16 and
    it is ~3x *slower* than float32 (measured as such a CPU, ONEDNN_MAX_CPU_ISA=AVX512_CORE: a
    yolov4-tiny training step 1.71 s against 0.60 s): the instruction sets are asked here, and an
    ISA cap below bf16 counts as their absence.
    """
    if not _onednn_bf16():
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISA:
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True  # Arm: PyTorch's check is the BF16 extension itself
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if avx512_bf16 is not None and amx is not None:
        return bool(avx512_bf16() or amx())
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def int8_dot_product() -> bool:
    """Whether this CPU multiplies int8 without saturating: on x86 the int8 dot-product
    instructions that accumulate in 32 bits (AVX-512 VNNI, AVX-VNNI, AMX int8: Cascade Lake,
    Zen 4 and newer); other architectures: True.

    Without them (AVX2 CPUs, AVX-512 before Cascade Lake) int8 convolution kernels add pairs of
    u8 x s8 products into 16 bits (vpmaddubsw), which saturate where the weights use the whole
    int8 range. OpenVINO's kernels do: on a 2-core AMD EPYC VM with AVX2 only, an NNCF int8
    yolo-fastest-1.1 with 8-bit weights kept a heads' SQNR of 18.2 dB against float32 where the
    exact int8 arithmetic gives 26.3 dB (onnxruntime's kernels: 26.3); with 7-bit weights 25.9 dB.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags())


def _onednn_bf16() -> bool:
    """PyTorch's own check: oneDNN has bf16 kernels here (natively or emulated)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_description() -> str:
    """The CPU model and its widest vector extensions (AMX, AVX-512 bf16/VNNI, AVX2), the line
    every speed figure is printed beside: "AMD EPYC (2 logical cores; avx2)"."""
    name, flags = _cpu_info()
    isa = [f for f in ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni", "avx2") if f in flags]
    return f"{name} ({os.cpu_count()} logical cores; {', '.join(isa) or 'no AVX2'})"


def _cpu_flags() -> frozenset[str]:
    """The x86 CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    return _cpu_info()[1]


@functools.cache
def _cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, feature flags) of the first CPU in /proc/cpuinfo, read once; where it cannot
    be read, `platform.processor()` and no flags."""
    name, flags = "", frozenset[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return name or platform.processor() or "unknown CPU", flags
