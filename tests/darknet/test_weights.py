"""darknet .weights binary I/O (on the zoo's yolov4-tiny: no reference data needed)."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ---------------------------------------------------------------- files that are not what they claim
@pytest.fixture(scope="module")
def small(small_cfg_text):
    return dn.Darknet(dn.parse_cfg(small_cfg_text, "small.cfg"))


def _good(small, path):
    return dn.save_weights(small, path)


def test_other_kinds_of_file_are_named(small, small_cfg_text, tmp_path):
    """A training checkpoint, an exported model, a pickle, a cfg or a folder given as --weights."""
    torch.save({"model": small.state_dict()}, tmp_path / "best.pt")
    (tmp_path / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(200))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x032.0" + bytes(200))
    import pickle

    (tmp_path / "evil.weights").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (tmp_path / "yolov4.cfg").write_text(small_cfg_text)
    (tmp_path / "folder.weights").mkdir()
    for name, message in {
        "best.pt": "not darknet weights but a zip archive, as PyTorch writes .pt checkpoints",
        "model.tflite": "not darknet weights but a TFLite model",
        "model.onnx": "not darknet weights but an ONNX model",
        "evil.weights": "not darknet weights but a Python pickle",
        "yolov4.cfg": "maybe a darknet .cfg",
        "folder.weights": "is a folder",
    }.items():
        with pytest.raises(WeightsError, match=message):
            dn.load_weights(small, tmp_path / name)


def test_non_finite_values_and_negative_variance_are_refused_and_leave_the_model_alone(small, tmp_path):
    good = _good(small, tmp_path / "good.weights").read_bytes()
    header = 20
    n = small.blocks[0].conv.out_channels
    before = {k: v.clone() for k, v in small.state_dict().items()}
    for name, offset, value in [
        ("nan.weights", header + 4 * (4 * n + 3), float("nan")),  # a weight of layer 0
        ("inf.weights", len(good) - 4, float("inf")),  # the last weight of layer 1
        ("var.weights", header + 4 * (3 * n + 1), -1.0),  # a rolling variance of layer 0
    ]:
        data = bytearray(good)
        data[offset : offset + 4] = struct.pack("<f", value)
        (tmp_path / name).write_bytes(bytes(data))
        with pytest.raises(WeightsError, match=f"{name}: layer [01] \\(convolutional\\)"):
            dn.load_weights(small, tmp_path / name)
    for k, v in small.state_dict().items():
        assert torch.equal(v, before[k]), k  # a refused file changed nothing


def _check_weights(small, path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        dn.load_weights(small, path)
    except WeightsError as e:
        assert path.name in str(e)
        return
    assert len(data) == weights_nbytes(small, header=read_header(path))  # accepted only when every byte fits
    assert all(torch.isfinite(v).all() for v in small.state_dict().values() if v.dtype.is_floating_point)


_WEIGHT_FILES = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.integers(-3, 1100), st.integers(-3, 1100), st.binary(max_size=560)).map(
        lambda t: struct.pack("<3i", t[0], t[1], 5) + t[2]
    ),
    st.tuples(st.sampled_from([(0, 2), (0, 1), (1000, 2)]), st.lists(st.floats(width=32), max_size=140)).map(
        lambda t: (
            struct.pack("<3i", *t[0], 5) + bytes(8 if t[0] == (0, 2) else 4) + struct.pack(f"<{len(t[1])}f", *t[1])
        )
    ),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=_WEIGHT_FILES)
def test_fuzzed_weights_raise_only_weights_error(small, tmp_path, data):
    _check_weights(small, tmp_path / "fuzz.weights", data)


@pytest.mark.slow
@settings(
    max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=_WEIGHT_FILES)
def test_fuzzed_weights_raise_only_weights_error_long(small, tmp_path, data):
    _check_weights(small, tmp_path / "fuzz.weights", data)
