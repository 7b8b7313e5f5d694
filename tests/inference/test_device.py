"""yolo4.inference.device: the device rule, the native-bf16 check that decides bf16 training
and `--half` on a CPU, and the int8 dot-product check that decides where OpenVINO runs int8."""

from __future__ import annotations

import pytest
import torch

import yolo4.inference.device as device
from yolo4.errors import Yolo4Error
from yolo4.inference.device import int8_dot_product, native_bf16, select_device


def test_select_device_names_what_it_cannot_do():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(Yolo4Error, match="unknown device 'gpu'"):
        select_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(Yolo4Error, match="PyTorch sees no CUDA device"):
            select_device("cuda")


def test_an_avx512_cpu_without_bf16_instructions_is_not_native(monkeypatch):
    """PyTorch's check says yes on Skylake / Cascade Lake / Ice Lake, where bf16 is emulated
    (~3x slower than fp32): the instruction sets decide."""
    monkeypatch.setattr(device, "_onednn_bf16", lambda: True)  # an AVX-512 CPU, as PyTorch sees it
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    for avx512_bf16, amx, native in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert native_bf16() is native, (avx512_bf16, amx)
    # a oneDNN ISA cap below bf16 (how this project emulates older CPUs) counts as no bf16
    for cap, native in [
        ("AVX2", False),
        ("avx512_core", False),
        ("AVX512_CORE_VNNI", False),
        ("AVX512_CORE_AMX", True),
    ]:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert native_bf16() is native, cap


def test_without_torchs_private_checks_the_cpu_flags_decide(monkeypatch):
    monkeypatch.setattr(device, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    for flags, native in [({"avx512f", "avx512bw"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True)]:
        monkeypatch.setattr(device, "_cpu_flags", lambda f=flags: f)
        assert native_bf16() is native, flags


def test_no_onednn_bf16_kernels_means_no_bf16_and_arm_trusts_them(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(device, "_onednn_bf16", lambda: False)  # an AVX2 CPU
    assert native_bf16() is False
    monkeypatch.setattr(device, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(device.platform, "machine", lambda: "aarch64")  # PyTorch's check is Arm's BF16 itself
    assert native_bf16() is True


def test_training_takes_bf16_only_where_it_is_native(monkeypatch):
    from yolo4.training import build
    from yolo4.training.config import TrainConfig

    cfg = TrainConfig(data="d")
    for native in (True, False):
        monkeypatch.setattr(build, "native_bf16", lambda n=native: n)
        assert build.autocast_dtype(cfg, torch.device("cpu")) == (torch.bfloat16 if native else None)


def test_int8_without_saturation_needs_vnni_or_amx_on_x86(monkeypatch):
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    for flags, exact in [
        ({"avx2", "fma"}, False),  # Haswell .. Zen 3
        ({"avx2", "avx512f", "avx512bw"}, False),  # Skylake-SP
        ({"avx2", "avx512f", "avx512_vnni"}, True),  # Cascade Lake, Zen 4
        ({"avx2", "avx_vnni"}, True),  # Alder Lake
        ({"avx2", "amx_int8"}, True),
        (set(), False),  # flags unreadable: assume the worst
    ]:
        monkeypatch.setattr(device, "_cpu_flags", lambda f=flags: f)
        assert int8_dot_product() is exact, flags
    monkeypatch.setattr(device.platform, "machine", lambda: "aarch64")
    assert int8_dot_product() is True
