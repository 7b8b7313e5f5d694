"""yolo4.inference.fastpath: the settings, the folded / channels_last / cast / compiled network
against plain eager fp32, the upload, and the Detector on the fast path (CPU here; the CUDA-only
parts are marked gpu and skip without one)."""

from __future__ import annotations

import json
import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import yolo4.darknet as dn
import yolo4.inference.fastpath as fastpath
from yolo4.errors import Yolo4Error
from yolo4.inference.detector import Detector
from yolo4.inference.device import native_bf16
from yolo4.inference.fastpath import EAGER, FAST_CPU, FAST_CUDA, PRECISIONS, FastNetwork, SpeedConfig, upload
from yolo4.inference.preprocess import preprocess
from yolo4.inference.speed import PRECISION_NAMES
from yolo4.models.zoo import build
from yolo4.ops.nms import PostprocessConfig

# fp32 CPU, everything that does not need a GPU or a compiler
CPU_FAST = EAGER.replace(fold_bn=True, channels_last=True, batched_nms=True)


def _model(size: int = 64, seed: int = 0) -> dn.Darknet:
    """yolov4-tiny (3 classes) with BatchNorm far from the identity, so that folding matters."""
    torch.manual_seed(seed)
    model = dn.Darknet(build("yolov4-tiny", num_classes=3, img_size=size)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_settings_are_checked_and_described():
    assert tuple(PRECISIONS) == PRECISION_NAMES  # the torch-free names (read by the command line) and the dtypes
    assert SpeedConfig.for_device(torch.device("cpu")) == FAST_CPU == SpeedConfig.for_device("cpu")
    assert FAST_CPU.describe() == "fp32, BN folded, channels_last, eager"  # nothing a user sees changes
    assert SpeedConfig.for_device("mps") == EAGER
    assert SpeedConfig.for_device(torch.device("cuda")) == FAST_CUDA
    assert (
        FAST_CUDA.describe() == "fp16, BN folded, channels_last, compiled (reduce-overhead), async upload, batched NMS"
    )
    assert EAGER.describe() == "fp32, eager"
    with pytest.raises(Yolo4Error, match="precision 'fp8'.*compile mode 'fast'"):
        SpeedConfig(precision="fp8", compile="fast")
    with pytest.raises(Yolo4Error, match="fp16 .*needs a CUDA device"):
        FAST_CUDA.on(torch.device("cpu"))
    bf16 = EAGER.replace(precision="bf16", async_upload=True).on(torch.device("cpu"))
    assert bf16.precision == "bf16" and not bf16.async_upload  # bf16 runs on a CPU; async upload is CUDA's
    flags = FAST_CUDA.with_flags(compile="max-autotune", fuse=False)
    assert (flags.compile, flags.fold_bn, flags.precision) == ("max-autotune", False, "fp16")
    assert EAGER.with_flags(half=True).precision == "fp16" and EAGER.with_flags() == EAGER
    # --half is the device's half precision: fp16 on CUDA, bf16 on a CPU
    assert FAST_CPU.with_flags(half=True, device=torch.device("cpu")).precision == "bf16"
    assert FAST_CUDA.with_flags(half=True, device="cuda:1").precision == "fp16"
    with pytest.raises(AttributeError):
        EAGER.precision = "fp16"  # frozen: one object passed down


def test_folded_channels_last_network_equals_eager_fp32_and_leaves_the_model_alone():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    net = FastNetwork(model, CPU_FAST, torch.device("cpu"))
    got = net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.module.modules())
    conv = next(m for m in net.module.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32 and g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    # the caller's module: still with its BatchNorm layers and the same tensors
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 19
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (avx512_bf16 / amx_bf16)")
def test_bf16_network_is_close_to_fp32():
    model = _model()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    net = FastNetwork(model, CPU_FAST.replace(precision="bf16"), torch.device("cpu"))
    got = net(x)
    assert next(net.module.parameters()).dtype == torch.bfloat16
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        err = (g - r).abs().max() / r.abs().max()
        assert err < 0.05, f"bf16 relative error {err:.3f}"


def test_bf16_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(fastpath, "native_bf16", lambda: False)
    with pytest.raises(Yolo4Error, match=r"bf16 \(--half on a CPU\) needs native bf16 .*3-5x slower"):
        FastNetwork(_model(), FAST_CPU.replace(precision="bf16"), torch.device("cpu"))
    FastNetwork(_model(), FAST_CPU, torch.device("cpu"))  # fp32 is fine


def test_upload_matches_the_eager_preprocessing():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    ref, _ = preprocess(images, (64, 64), "stretch", "cpu")
    plain = upload(images, torch.device("cpu"), EAGER)
    assert plain.dtype == torch.float32 and plain.is_contiguous()
    torch.testing.assert_close(plain, ref, rtol=0, atol=0)
    nhwc = upload(np.stack(images), torch.device("cpu"), CPU_FAST.replace(precision="bf16"))
    assert nhwc.dtype == torch.bfloat16 and nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc.float(), ref, rtol=0, atol=4e-3)  # bf16: 8 bits of mantissa


def test_detector_on_the_fast_path_finds_what_the_eager_detector_finds():
    model = _model(96, seed=1)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (80 + 16 * i, 120, 3), dtype=np.uint8) for i in range(3)]
    post = PostprocessConfig(conf=0.2, labels="all")
    eager = Detector(model, postprocess=post, device="cpu", speed=EAGER)
    fast = Detector(model, postprocess=post, device="cpu", speed=CPU_FAST)
    default = Detector(model, postprocess=post, device="cpu")
    assert eager.speed == EAGER and fast.speed == CPU_FAST and default.speed == FAST_CPU
    ref = eager.predict_batch(images)
    assert sum(len(r) for r in ref) > 10
    for r, g in [pair for det in (fast, default) for pair in zip(ref, det.predict_batch(images))]:
        assert len(r) == len(g) and g.image_hw == r.image_hw
        np.testing.assert_allclose(g.boxes, r.boxes, atol=1e-2)
        np.testing.assert_allclose(g.scores, r.scores, atol=1e-4)
        assert g.class_ids.tolist() == r.class_ids.tolist()
        assert set(g.timings) == {"preprocess", "network", "postprocess"}
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the given module is not folded


def test_a_runner_gets_float32_input_whatever_the_speed(fake_runner, tiny_cfg):
    seen = []

    def runner(x):
        seen.append((x.dtype, x.is_contiguous()))
        return fake_runner(x)

    det = Detector(tiny_cfg, runner=runner, device="cpu", speed=CPU_FAST.replace(precision="bf16"))
    [res] = det.predict_batch([np.zeros((64, 64, 3), np.uint8)])
    assert seen == [(torch.float32, True)] and det.speed.precision == "fp32" and det.speed.batched_nms
    np.testing.assert_allclose(res.boxes, [[32, 8, 64, 24]], atol=1e-3)


def test_a_compiler_that_fails_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken_compile(module, **kw):
        def run(x):
            raise RuntimeError("no C++ compiler\nmore lines")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _model()
    net = FastNetwork(model, CPU_FAST.replace(compile="default"), torch.device("cpu"))
    x = torch.rand(1, 3, 64, 64)
    with pytest.warns(RuntimeWarning, match=r"torch.compile\(default\) failed \(RuntimeError: no C\+\+ compiler\)"):
        got = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = net(x)  # eager from now on, no second warning
    with torch.no_grad():
        ref = model(x)
    for g, a, r in zip(got, again, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a, g)


@pytest.mark.slow
def test_compiled_network_equals_eager_and_pads_smaller_batches():
    """torch.compile on the CPU (inductor, C++): 1-2 min cold, seconds with the cache warm."""
    model = _model()
    net = FastNetwork(model, CPU_FAST.replace(compile="default"), torch.device("cpu"))
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
        got3 = net(x)
        got1 = net(x[:1])  # padded to the compiled batch of 3
    assert net.compiled and net._largest == 3
    for g3, g1, r in zip(got3, got1, ref):
        torch.testing.assert_close(g3, r, rtol=1e-4, atol=1e-4)
        assert g1.shape[0] == 1
        torch.testing.assert_close(g1, r[:1], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_many_compiled_networks_in_one_process_all_stay_compiled():
    """dynamo counts every compiled Darknet's variants against one limit (8 by default), past
    which it runs eagerly with only a log line; FastNetwork raises it."""
    import torch._dynamo.config as dynamo_config

    model = _model(32)
    x = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a limit hit falls back to eager with a warning
        nets = [FastNetwork(model, CPU_FAST.replace(compile="default"), torch.device("cpu")) for _ in range(10)]
        for net in nets:
            net(x)
    assert all(net.compiled for net in nets) and dynamo_config.recompile_limit >= 64
    # past the limit: a warning and eager, never a silent eager run
    net = FastNetwork(_model(32, seed=3), CPU_FAST.replace(compile="default"), torch.device("cpu"))
    failed = r"torch.compile\(default\) failed \(FailOnRecompileLimitHit"
    with dynamo_config.patch(recompile_limit=1), pytest.warns(RuntimeWarning, match=failed):  # 10 variants exist
        net(x)
    assert not net.compiled


@pytest.mark.gpu
def test_cuda_fast_path_detector_agrees_with_the_cpu_eager_one():
    model = _model(96, seed=1)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    post = PostprocessConfig(conf=0.2)
    ref = Detector(model, postprocess=post, device="cpu", speed=EAGER).predict_batch(images)
    det = Detector(model, postprocess=post, device="cuda")
    assert det.speed == FAST_CUDA
    got = det.predict_batch(images)
    got_again = det.predict_batch(images[:3])  # padded to the compiled batch of 4
    for r, g, g2 in zip(ref, got, got_again):
        assert g.timings["network"] > 0
        matched = sum(np.abs(g.boxes - b).max(axis=1).min() < 1.0 for b in r.boxes) if len(g) else 0
        assert matched >= 0.9 * len(r)  # fp16: a box near the threshold may differ
        np.testing.assert_allclose(g2.boxes, g.boxes, atol=1e-3)


def test_bench_gpu_smoke_runs(tmp_path, monkeypatch, capsys):
    """benchmarks/bench_gpu.py --smoke: the CPU version of the GPU run writes every table."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    monkeypatch.setattr(
        sys, "argv", [str(script), "--smoke", "--device", "cpu", "--out", str(tmp_path), "--budget-s", "1e6"]
    )
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    data = json.loads((tmp_path / "gpu.json").read_text())
    ways = {(r["batch"], r["way"]) for r in data["tables"]["inference"]}
    expected = ("eager fp32", "yolo4 fast") + (("eager bf16",) if native_bf16() else ())  # bf16: native only
    assert ways == {(b, w) for b in (1, 2) for w in expected}
    assert all(r["network img/s"] > 0 and r["end-to-end img/s"] > 0 for r in data["tables"]["inference"])
    variants = {(r["variant"], r["data"].split(":")[0]) for r in data["tables"]["training"]}
    assert variants == {
        ("eager fp32", "on the GPU (step only)"),
        ("yolo4 recipe", "on the GPU (step only)"),
        ("yolo4 recipe", "loader"),
    }
    assert "| model | input | batch | way |" in (tmp_path / "gpu_tables.md").read_text()
    assert "### training" in capsys.readouterr().out


def test_bench_cpu_smoke_runs(tmp_path, monkeypatch):
    """benchmarks/bench_cpu.py --smoke: every uncompiled setting timed, the table and the plot written."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))  # (it reads bench_export's photo list)
    monkeypatch.setattr(sys, "argv", ["bench_cpu.py", "--smoke", "--out", str(tmp_path)])
    runpy.run_path(str(bench / "bench_cpu.py"), run_name="__main__")
    data = json.loads((tmp_path / "cpu_results.json").read_text())
    settings = {"eager fp32", "default"} | ({"bf16"} if native_bf16() else set())
    assert {(r["batch"], r["setting"]) for r in data["speed"]} == {(b, s) for b in (1, 2) for s in settings}
    for r in data["speed"]:
        assert r["ms_per_img"] > 0
        assert r["heads_max_rel_diff"] < (0.05 if r["setting"] == "bf16" else 1e-4), r  # fp32 settings: exact
    assert "| yolov4-tiny | 64 | 1 | default |" in (tmp_path / "cpu_table.md").read_text()
    assert (tmp_path / "cpu_speed.png").stat().st_size > 1000
