from __future__ import annotations

import torch

import yolo4.darknet as dn
from yolo4.cli import main
from yolo4.inference.benchmark import benchmark, fuse_conv_bn


def test_fused_model_gives_the_same_heads(reference):
    spec = dn.read_cfg(reference / "models" / "yolo-fastest-1.1.cfg")
    model = dn.load(spec, reference / "models" / "yolo-fastest-1.1.weights")
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        before = model(x)
        after = fuse_conv_bn(model)(x)
    assert not any(isinstance(b.bn, torch.nn.BatchNorm2d) for b in model.blocks if hasattr(b, "bn"))
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-4)


def test_benchmark_reports_positive_times(reference):
    r = benchmark(
        str(reference / "models" / "yolo-fastest-1.1.cfg"),
        reference / "models" / "yolo-fastest-1.1.weights",
        img_size=160,
        iters=2,
        warmup=1,
    )
    assert r.network_ms > 0 and r.postprocess_ms > 0 and r.input_hw == (160, 160)
    assert r.fps_network > r.fps_total
    assert abs(r.rule_of_thumb_fps(14.0) - 0.4 * 14e3 / r.bflops) < 1e-9
    assert "FPS" in r.summary()


def test_benchmark_cli(capsys):
    assert (
        main(
            [
                "benchmark",
                "--model",
                "yolov4-tiny",
                "--img-size",
                "96",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--peak-tflops",
                "14",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "yolov4-tiny 96x96 batch 1" in out and "rule of thumb" in out
