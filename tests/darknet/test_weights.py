"""darknet .weights binary I/O (on the zoo's yolov4-tiny: no reference data needed)."""

from __future__ import annotations

import struct

import pytest
import torch

import yolo4.darknet as dn
from yolo4.darknet.weights import WeightsHeader, read_header, weights_nbytes
from yolo4.errors import WeightsError
from yolo4.models.zoo import build


@pytest.fixture(scope="module")
def tiny():
    spec = build("yolov4-tiny")  # layer for layer the official cfg (tests/models/test_zoo.py)
    torch.manual_seed(0)
    model = dn.Darknet(spec)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.dtype.is_floating_point:
                p.copy_(torch.rand_like(p) + 0.1)
    return model


def test_save_then_load_is_bit_exact(tiny, tmp_path):
    path = dn.save_weights(tiny, tmp_path / "t.weights", header=WeightsHeader(0, 2, 5, 123456789012))
    other = dn.Darknet(tiny.spec)
    header = dn.load_weights(other, path)
    assert header.seen == 123456789012 and header.seen_is_64bit
    for (k, a), b in zip(tiny.state_dict().items(), other.state_dict().values()):
        if a.dtype.is_floating_point:
            assert torch.equal(a, b), k
    assert path.stat().st_size == weights_nbytes(tiny)
    again = dn.save_weights(other, tmp_path / "u.weights", header=WeightsHeader(0, 2, 5, 123456789012))
    assert again.read_bytes() == path.read_bytes()


def test_old_header_with_int32_seen(tiny, tmp_path):
    path = dn.save_weights(tiny, tmp_path / "old.weights", header=WeightsHeader(0, 1, 0, 7))
    assert path.stat().st_size == weights_nbytes(tiny) - 4
    h = read_header(path)
    assert (h.major, h.minor, h.seen, h.seen_is_64bit) == (0, 1, 7, False)
    dn.load_weights(dn.Darknet(tiny.spec), path)


def test_file_layout_of_first_conv(tiny, tmp_path):
    """biases, scales, rolling mean, rolling variance, then weights."""
    path = dn.save_weights(tiny, tmp_path / "t.weights")
    raw = path.read_bytes()[20:]
    first = tiny.blocks[0]
    n = first.conv.out_channels
    floats = struct.unpack(f"<{4 * n + first.conv.weight.numel()}f", raw[: 4 * (4 * n + first.conv.weight.numel())])
    order = [first.bn.bias, first.bn.weight, first.bn.running_mean, first.bn.running_var]
    for k, t in enumerate(order):
        assert torch.allclose(torch.tensor(floats[k * n : (k + 1) * n]), t.detach())
    assert torch.allclose(torch.tensor(floats[4 * n :]), first.conv.weight.detach().flatten())


def test_truncated_and_oversized_files_name_both_sizes(tiny, tmp_path):
    good = dn.save_weights(tiny, tmp_path / "t.weights").read_bytes()
    expected = len(good)
    for name, data in (("short.weights", good[:-10]), ("long.weights", good + b"\0" * 8)):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(WeightsError) as e:
            dn.load_weights(dn.Darknet(tiny.spec), p)
        msg = str(e.value)
        assert name in msg and f"{len(data)} bytes" in msg and f"{expected} bytes expected" in msg
    p = tmp_path / "empty.weights"
    p.write_bytes(b"\1\2")
    with pytest.raises(WeightsError, match="too short"):
        dn.load_weights(dn.Darknet(tiny.spec), p)
    with pytest.raises(WeightsError, match="cannot read"):
        dn.load_weights(dn.Darknet(tiny.spec), tmp_path / "missing.weights")


def test_backbone_prefix_is_explicit(tiny, tmp_path):
    prefix = dn.save_weights(tiny, tmp_path / "tiny.conv.29", upto=29)
    fresh = dn.Darknet(tiny.spec)
    with pytest.raises(WeightsError, match="upto=N"):  # never a silent partial load
        dn.load_weights(fresh, prefix)
    dn.load_weights(fresh, prefix, upto=29)
    assert torch.equal(fresh.blocks[27].conv.weight, tiny.blocks[27].conv.weight)
    assert not torch.equal(fresh.blocks[29].conv.weight, tiny.blocks[29].conv.weight)
    with pytest.raises(WeightsError, match="outside"):
        dn.load_weights(fresh, prefix, upto=10_000)
    # a whole-network file with upto: only its first layers are read (darknet's `partial`)
    full = dn.save_weights(tiny, tmp_path / "tiny.weights")
    other = dn.Darknet(tiny.spec)
    dn.load_weights(other, full, upto=29)
    assert torch.equal(other.blocks[27].conv.weight, tiny.blocks[27].conv.weight)
    assert not torch.equal(other.blocks[29].conv.weight, tiny.blocks[29].conv.weight)
    full.write_bytes(full.read_bytes()[:-4])  # neither the prefix nor the whole network: refused
    with pytest.raises(WeightsError, match="does not match"):
        dn.load_weights(other, full, upto=29)


def test_load_helper_returns_eval_module(tiny, tmp_path):
    cfg = dn.write_cfg(tiny.spec, tmp_path / "t.cfg")
    weights = dn.save_weights(tiny, tmp_path / "t.weights")
    model = dn.load(cfg, weights)
    assert not model.training
    assert len(model.yolo_layers) == 2
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), tiny.eval()(x)):
            assert torch.equal(a, b)


def test_real_model_loads(reference):
    model = dn.load(reference / "models" / "yolo-fastest-1.1.cfg", reference / "models" / "yolo-fastest-1.1.weights")
    assert not model.training
    assert len(model.yolo_layers) == 2
