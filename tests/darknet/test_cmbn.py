"""CmBN (darknet's batch_normalize=2) against brute-force BatchNorm over concatenated mini-batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import yolo4.darknet as dn
from yolo4.darknet.cmbn import CmBatchNorm2d, reset_cmbn
from yolo4.export.darknet import export_darknet

C, HW, EPS = 4, (3, 5), 1e-6


def make_bn(momentum: float | None = 0.1, seed: int = 0) -> CmBatchNorm2d:
    """A CmBatchNorm2d with non-trivial affine terms, in train mode."""
    g = torch.Generator().manual_seed(seed)
    m = CmBatchNorm2d(C, eps=EPS, momentum=momentum)
    with torch.no_grad():
        m.weight.copy_(torch.rand(C, generator=g) + 0.5)
        m.bias.copy_(torch.randn(C, generator=g))
    return m.train()


def batches(sizes: list[int], seed: int = 1) -> list[torch.Tensor]:
    """Mini-batches Tensor[B_i, C, H, W] with a per-channel offset (|mean| > std)."""
    g = torch.Generator().manual_seed(seed)
    offset = torch.arange(C, dtype=torch.float32).view(1, C, 1, 1) * 2 - 3
    return [torch.randn(b, C, *HW, generator=g) * 0.7 + offset for b in sizes]


def brute_force(m: CmBatchNorm2d, xs: list[torch.Tensor]) -> torch.Tensor:
    """Training-mode BatchNorm over cat(xs), rows of the last mini-batch: Tensor[B_k, C, H, W]."""
    y = F.batch_norm(torch.cat(xs), None, None, m.weight, m.bias, training=True, eps=m.eps)
    return y[-len(xs[-1]) :]


def plain_bn(m: CmBatchNorm2d) -> nn.BatchNorm2d:
    """nn.BatchNorm2d with the same hyper-parameters and state as `m`, in `m`'s mode."""
    bn = nn.BatchNorm2d(C, eps=m.eps, momentum=m.momentum)
    bn.load_state_dict(m.state_dict())
    return bn.train(m.training)


@pytest.mark.parametrize("sizes", [[3, 3], [2, 5], [2, 2, 2], [4, 1, 3]], ids=str)
def test_minibatch_k_is_bn_over_minibatches_1_to_k(sizes):
    m = make_bn()
    xs = batches(sizes)
    bn = plain_bn(m)
    assert torch.equal(m(xs[0]), bn(xs[0]))  # mini-batch 1: exactly BatchNorm2d
    for k in range(1, len(xs)):
        torch.testing.assert_close(m(xs[k]), brute_force(m, xs[: k + 1]), atol=1e-5, rtol=0)


def test_reset_starts_a_new_step_with_plain_bn():
    model = nn.Sequential(make_bn(), nn.ReLU(), make_bn(seed=2))
    x1, x2, x3 = batches([2, 3, 4])
    model(x1), model(x2)
    bn = plain_bn(model[0])
    assert reset_cmbn(model) == 2
    assert (model[0].acc_count, model[0].acc_mean, model[0].acc_m2) == (0, None, None)
    assert torch.equal(model[0](x3), bn(x3))
    assert torch.equal(model[0].running_mean, bn.running_mean)
    assert torch.equal(model[0].running_var, bn.running_var)
    assert reset_cmbn(nn.Sequential(nn.BatchNorm2d(C))) == 0


def test_gradients_reach_the_current_minibatch_only():
    m = make_bn()
    xs = [x.requires_grad_(True) for x in batches([3, 2, 2])]
    g = torch.Generator().manual_seed(3)
    for k, x in enumerate(xs):
        w = torch.randn(x.shape, generator=g)
        loss = (m(x) * w).sum()
        g_x, g_weight = torch.autograd.grad(loss, [x, m.weight], retain_graph=True)
        for earlier in xs[:k]:  # earlier mini-batches' statistics are constants
            assert torch.autograd.grad(loss, earlier, retain_graph=True, allow_unused=True) == (None,)
        ref_x = x.detach().clone().requires_grad_(True)
        ref_loss = (brute_force(m, [e.detach() for e in xs[:k]] + [ref_x]) * w).sum()
        r_x, r_weight = torch.autograd.grad(ref_loss, [ref_x, m.weight])
        torch.testing.assert_close(g_x, r_x, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g_weight, r_weight, atol=1e-4, rtol=1e-5)


def test_eval_is_batchnorm2d_with_the_same_state_dict():
    m = make_bn()
    for x in batches([2, 3, 2]):
        m(x)
    m.eval()
    bn = plain_bn(m)
    assert list(m.state_dict()) == list(bn.state_dict())
    assert isinstance(m, nn.BatchNorm2d)
    x = batches([2], seed=9)[0]
    assert torch.equal(m(x), bn(x))
    assert m.acc_count == (2 + 3 + 2) * HW[0] * HW[1]  # eval forwards do not accumulate


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_follow_the_accumulated_statistics(momentum):
    m = make_bn(momentum)
    xs = batches([2, 3, 2])
    mean, var = torch.zeros(C), torch.ones(C)
    for k, x in enumerate(xs, start=1):
        m(x)
        union = torch.cat(xs[:k])
        f = 1.0 / k if momentum is None else momentum
        mean = (1 - f) * mean + f * union.mean(dim=(0, 2, 3))
        var = (1 - f) * var + f * union.var(dim=(0, 2, 3), correction=1)
        torch.testing.assert_close(m.running_mean, mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(m.running_var, var, atol=1e-6, rtol=1e-6)
    assert int(m.num_batches_tracked) == len(xs)


def test_autocast_bfloat16_channels_last():
    torch.manual_seed(0)
    conv, m = nn.Conv2d(3, C, 3, padding=1, bias=False), make_bn()
    xs = [x[:, :3].contiguous(memory_format=torch.channels_last).requires_grad_(True) for x in batches([2, 2])]
    feats, outs = [], []
    for x in xs:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = conv(x)
            y = m(f)
        assert f.dtype == y.dtype == torch.bfloat16
        assert y.is_contiguous(memory_format=torch.channels_last)
        feats.append(f.detach().float())
        outs.append(y)
        y.float().square().mean().backward()
    assert xs[1].grad is not None and torch.isfinite(xs[1].grad).all() and torch.isfinite(conv.weight.grad).all()
    ref = brute_force(m, feats)  # float32 statistics of the same bf16 features
    torch.testing.assert_close(outs[1].float(), ref, atol=3e-2, rtol=1e-2)
    assert m.acc_mean.dtype == m.acc_m2.dtype == torch.float32


# ---------------------------------------------------------------- Darknet

CFG = """[net]
width=32
height=32
channels=3
[convolutional]
batch_normalize={bn}
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
batch_normalize={bn}
filters=8
size=1
stride=1
pad=1
activation=mish
[convolutional]
filters=6
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0
anchors=10,14
classes=1
num=1
"""


def randomize(model: dn.Darknet, seed: int = 0) -> dn.Darknet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
    return model


def test_darknet_batch_normalize_2_builds_cmbn_with_the_bn_layout(tmp_path):
    spec2, spec1 = dn.parse_cfg(CFG.format(bn=2)), dn.parse_cfg(CFG.format(bn=1))
    assert "batch_normalize=2" in dn.format_cfg(spec2)
    assert dn.parse_cfg(dn.format_cfg(spec2)) == spec2
    cm, plain = randomize(dn.Darknet(spec2)).eval(), dn.Darknet(spec1).eval()
    assert sum(isinstance(m, CmBatchNorm2d) for m in cm.modules()) == 2
    assert not any(isinstance(m, CmBatchNorm2d) for m in plain.modules())
    cost = [[(i.params, i.bflops) for i in dn.infer_shapes(s)] for s in (spec2, spec1)]
    assert cost[0] == cost[1]
    assert list(cm.state_dict()) == list(plain.state_dict())
    dn.save_weights(cm, tmp_path / "cm.weights")
    dn.load_weights(plain, tmp_path / "cm.weights")
    dn.save_weights(plain, tmp_path / "plain.weights")
    assert (tmp_path / "plain.weights").read_bytes() == (tmp_path / "cm.weights").read_bytes()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(cm(x), plain(x)))
        cm.train(), cm(x[:1]), cm(x[1:])  # two mini-batches of one step
    assert [m.acc_count for m in cm.modules() if isinstance(m, CmBatchNorm2d)] == [2 * 16 * 16] * 2
    assert reset_cmbn(cm) == 2


def test_darknet_export_writes_batch_normalize_1_for_opencv(tmp_path):
    model = randomize(dn.Darknet(dn.parse_cfg(CFG.format(bn=2)))).eval()
    cfg, weights = export_darknet(model, tmp_path / "cm.cfg")
    text = cfg.read_text()
    assert "batch_normalize=2" not in text and text.count("batch_normalize=1") == 2
    assert model.spec.layers[0].batch_normalize == 2  # the model's own spec is untouched
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)[0]
        assert torch.equal(dn.load(cfg, weights)(x)[0], ref)
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("OpenCV without a darknet reader")
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(x.numpy())
    got = net.forward("conv_2")  # the conv feeding [yolo]
    assert abs(got - ref.numpy()).max() <= 1e-4
