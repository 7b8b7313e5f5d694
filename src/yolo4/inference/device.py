"""Which device a command runs on: one rule for every command and the Python API."""

from __future__ import annotations

import os

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


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX: oneDNN's bf16 kernels,
    2-4x float32's speed); without it bf16 is emulated and about 5x slower than float32."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
