"""Layer kinds own their shape rule, cost, module and table row: a new kind is one class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import yolo4.darknet as dn
from yolo4.darknet.layers import CHW, LAYERS, Convolutional, Layer, LayerInfo, NetOptions, NetworkSpec, TableCells
from yolo4.errors import CfgError
from yolo4.models.summary import format_info, model_info


class _Times(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        return x * self.factor + refs[0]


@dataclass
class _ScaleAdd(Layer):
    """A kind this library does not have: previous output * factor + output of `from`."""

    KIND: ClassVar[str] = "scale_add"
    REFS: ClassVar[str] = "from_"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    factor: float = 2.0

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        if refs[0] != chw:
            raise CfgError(f"{where}: [scale_add] shapes {chw} and {refs[0]} differ")
        return chw

    def cost(self, chw: CHW, refs: list[CHW], out: CHW) -> tuple[float, int]:
        c, h, w = out
        return 2 * c * h * w / 1e9, 0

    def build(self, chw: CHW) -> nn.Module:
        return _Times(self.factor)

    def describe(self, info: LayerInfo) -> TableCells:
        return TableCells("scale_add", notes=f"x{self.factor:g} + layer {info.sources[0]}")


def _conv(filters: int, stride: int = 1) -> Convolutional:
    return Convolutional(filters=filters, size=3, stride=stride, pad=1, activation="leaky")


def test_a_new_layer_kind_needs_only_its_class(monkeypatch):
    """Shapes, cost, the module and `yolo4 info` all come from the class; registering it in
    LAYERS makes cfg text parse and print it too."""
    spec = NetworkSpec(NetOptions(width=32, height=32), [_conv(4, 2), _conv(4), _ScaleAdd(from_=[-2], factor=3.0)])
    infos = dn.infer_shapes(spec)
    assert infos[2].sources == (0,) and infos[2].out_chw == (4, 16, 16)
    assert infos[2].bflops == pytest.approx(2 * 4 * 16 * 16 / 1e9)
    net = dn.Darknet(spec).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = net.blocks[0](x, [])
        b = net.blocks[1](a, [])
        torch.testing.assert_close(net.blocks[2](b, [a]), 3.0 * b + a)
    assert "x3 + layer 0" in format_info(spec).splitlines()[4]
    assert model_info(spec).bflops == pytest.approx(sum(i.bflops for i in infos))

    monkeypatch.setitem(LAYERS, "scale_add", _ScaleAdd)
    text = dn.format_cfg(spec)
    assert "[scale_add]" in text and "from=-2" in text
    again = dn.parse_cfg(text, "new.cfg")
    assert isinstance(again.layers[2], _ScaleAdd) and again.layers[2].factor == 3.0

    bad = NetworkSpec(NetOptions(width=32, height=32), [_conv(4, 2), _conv(8), _ScaleAdd(from_=[-2])], source="b.cfg")
    with pytest.raises(CfgError, match=r"b.cfg: layer 2: \[scale_add\] shapes"):
        dn.infer_shapes(bad)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_kind_has_a_shape_rule_and_a_module(kind):
    cls = LAYERS[kind]
    for method in ("out_shape", "build"):
        assert getattr(cls, method) is not getattr(Layer, method), f"[{kind}] does not define {method}"
