"""`yolo4 info`: a darknet-style layer table with darknet's totals.

    info = model_info(build("yolov4"))          # at the [net] size, 608
    info.bflops, info.params                     # 128.459..., 64363101 (darknet's figures)
    print(format_info(build("yolov4-tiny")))

BFLOPs are darknet's: 2 x multiply-adds of every conv, plus the element counts of max-pools
and shortcuts; params are the trainable ones (conv weights, and BN gamma/beta or the conv
bias). The FPS estimate is darknet's rule of thumb: a GPU sustains about 40% of its peak
FLOPS on these networks, so fps = 0.4 * peak_tflops * 1e12 / (bflops * 1e9).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TextIO

from yolo4.darknet.layers import Layer, LayerInfo, NetworkSpec
from yolo4.darknet.network import infer_shapes

DARKNET_EFFICIENCY = 0.4  # share of peak FLOPS darknet's rule of thumb assumes


@dataclass(frozen=True)
class ModelInfo:
    """Per-layer shapes and costs of a network at one input size, with the totals."""

    name: str
    input_chw: tuple[int, int, int]
    layers: tuple[LayerInfo, ...]
    num_classes: int  # of the first [yolo] layer (0 when there is none)

    @property
    def bflops(self) -> float:
        """darknet's "Total BFLOPS"."""
        return sum(info.bflops for info in self.layers)

    @property
    def params(self) -> int:
        """Trainable parameters."""
        return sum(info.params for info in self.layers)


def model_info(spec: NetworkSpec, input_hw: tuple[int, int] | None = None) -> ModelInfo:
    """Shapes and costs of `spec` at `input_hw` (height, width; default: the [net] size)."""
    hw = input_hw or (spec.net.height, spec.net.width)
    heads = spec.yolo_layers
    return ModelInfo(
        name=spec.source,
        input_chw=(spec.net.channels, *hw),
        layers=tuple(infer_shapes(spec, hw)),
        num_classes=heads[0].classes if heads else 0,
    )


def predicted_fps(bflops: float, peak_tflops: float, efficiency: float = DARKNET_EFFICIENCY) -> float:
    """darknet's rule of thumb: fps = efficiency * peak_tflops * 1e12 / (bflops * 1e9)."""
    if bflops <= 0:
        return float("inf")
    return efficiency * peak_tflops * 1e12 / (bflops * 1e9)


def _hwc(chw: tuple[int, int, int]) -> str:
    c, h, w = chw
    return f"{w:4d} x{h:4d} x{c:5d}"  # darknet prints width x height x channels


def _row(layer: Layer, info: LayerInfo) -> str:
    """One table line: index, type, filters, size/stride, input -> output, BFLOPs, notes."""
    cells = layer.describe(info)
    shapes = f"{_hwc(info.in_chw) if cells.show_input else '':17s} -> {_hwc(info.out_chw)}"
    bf = f"{info.bflops:8.3f}" if info.bflops else ""
    return f"{info.index:5d}  {cells.kind:<9s}{cells.filters:>7s}  {cells.size:<11s}{shapes} {bf:>8s}  {cells.notes}".rstrip()


def format_info(spec: NetworkSpec, input_hw: tuple[int, int] | None = None, peak_tflops: float = 14.0) -> str:
    """The darknet-style layer table of `spec` at `input_hw` and the totals: darknet's
    "Total BFLOPS", trainable params, and the FPS darknet's rule of thumb predicts at
    `peak_tflops` (the device's peak, e.g. 14 for a V100 in fp32)."""
    info = model_info(spec, input_hw)
    c, h, w = info.input_chw
    lines = [
        f"{info.name}: {len(info.layers)} layers, input {w} x {h} x {c}, {info.num_classes} classes, "
        f"{len(spec.yolo_layers)} [yolo] heads",
        f"{'layer':>5s}  {'type':<9s}{'filters':>7s}  {'size/strd':<11s}{'input':^17s}    {'output':^17s}"
        f" {'BFLOPs':>8s}  notes",
    ]
    lines += [_row(layer, row) for layer, row in zip(spec.layers, info.layers)]
    fps = predicted_fps(info.bflops, peak_tflops)
    lines += [
        f"Total BFLOPS {info.bflops:.3f}",
        f"Trainable params {info.params:,} ({info.params / 1e6:.3f} M)",
        f"Predicted FPS {fps:.1f} at {peak_tflops:g} peak TFLOPS "
        f"(darknet's rule of thumb: {DARKNET_EFFICIENCY:.0%} of peak)",
    ]
    return "\n".join(lines)


def print_info(
    model: str | os.PathLike | NetworkSpec,
    img_size: int | None = None,
    num_classes: int | None = None,
    peak_tflops: float = 14.0,
    file: TextIO | None = None,
) -> ModelInfo:
    """`yolo4 info`: print the layer table and totals of a zoo model or .cfg (a user-facing
    report). `img_size` overrides the [net] size; `num_classes` the classes (zoo default 80,
    a cfg keeps its own). Returns the figures printed."""
    from yolo4.models.zoo import resolve_spec

    spec = model if isinstance(model, NetworkSpec) else resolve_spec(model, num_classes=num_classes, img_size=img_size)
    hw = (img_size, img_size) if img_size else None
    print(format_info(spec, hw, peak_tflops), file=file or sys.stdout)
    return model_info(spec, hw)
