from __future__ import annotations

import pytest
import torch

import yolo4.darknet as dn
from yolo4.cli import main
from yolo4.darknet.layers import Conv, Convolutional, NetOptions, NetworkSpec, YoloLayer
from yolo4.inference.benchmark import benchmark, fuse_conv_bn
from yolo4.models.zoo import build


def _random_bn(model: dn.Darknet, seed: int = 0) -> None:
    """BatchNorm statistics and affine parameters far from the identity, so that fusing matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_fused_model_gives_the_same_heads():
    model = dn.Darknet(build("yolov4-tiny", num_classes=3, img_size=96)).eval()
    _random_bn(model)
    n_bn = sum(isinstance(b, Conv) and isinstance(b.bn, torch.nn.BatchNorm2d) for b in model.blocks)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        after = fuse_conv_bn(model)(x)
    assert n_bn == 19 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(b.conv.bias is not None for b in model.blocks if isinstance(b, Conv))
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval-mode"):
        fuse_conv_bn(model.train())


def _two_conv_net() -> dn.Darknet:
    """3x32x32 -> conv 3x3 (8) -> conv 1x1 (6) -> [yolo] (1 anchor, 1 class)."""
    spec = NetworkSpec(
        NetOptions(width=32, height=32),
        [
            Convolutional(filters=8, size=3, stride=1, pad=1, batch_normalize=1, activation="leaky"),
            Convolutional(filters=6, size=1, activation="linear"),
            YoloLayer(mask=[0], anchors=[(10.0, 10.0)], classes=1, num=1),
        ],
    )
    return dn.Darknet(spec)


def test_benchmark_counts_flops_by_hand():
    r = benchmark(_two_conv_net(), iters=3, warmup=1)
    # 2 x MACs: 3*8*3*3 * 32*32 + 8*6 * 32*32 = 221184 + 49152 = 270336 MACs
    assert r.bflops == pytest.approx(540672 / 1e9)
    assert r.rule_of_thumb_fps(14.0) == pytest.approx(10357481.06, rel=1e-9)  # 0.4 * 14e12 / 540672
    assert r.input_hw == (32, 32) and r.batch == 1 and r.iters == 3 and r.dtype == "float32"
    assert 0 < r.network_ms < 1000 and 0 < r.postprocess_ms < 1000
    assert r.fps_network == pytest.approx(1000 / r.network_ms)
    assert r.fps_total == pytest.approx(1000 / (r.network_ms + r.postprocess_ms))
    assert "32x32 batch 1 float32" in r.summary() and "0.001 BFLOPs/img" in r.summary()


def test_benchmark_bflops_follow_the_input_size():
    a = benchmark("yolov4-tiny", img_size=32, iters=1, warmup=0)
    b = benchmark("yolov4-tiny", img_size=64, iters=1, warmup=0)
    assert b.bflops == pytest.approx(4 * a.bflops)  # every cost scales with the pixel count
    assert b.bflops == pytest.approx(6.9 * (64 / 416) ** 2, rel=0.01)  # darknet prints 6.9 BFLOPs at 416


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
