"""The PyTorch view of a darknet layer list.

    spec = read_cfg("yolov4.cfg")
    model = Darknet(spec)                    # nn.Module
    heads = model(images)                    # images: (B, 3, H, W) float in [0, 1], RGB
    # heads: list, one tensor per [yolo] layer in cfg order, each (B, A*(5+C), H_i, W_i),
    # exactly what darknet's [yolo] layer receives (decoding and NMS live in yolo4.ops).

In training mode (`model.train()`) every head's output is logits: the conv before a
`new_coords=1` head, whose `activation=logistic` makes its output probabilities at inference,
skips that logistic, and the loss applies it in float32 (`yolo4.ops.losses`). A probability
saturates at exactly 1.0 (bf16: from a logit of about 6; float32: 17), where a BCE on it has
no gradient, so a negative that saturated once stayed saturated (yolov4-csp-leaky from scratch).

`forward` walks the layer list with no data-dependent control flow: the loop and the
indices it reads are fixed when the module is built, so torch.compile, CUDA graphs and
ONNX export see a static graph.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from yolo4.darknet.layers import (  # modules live next to their layer kinds; re-exported for importers
    Conv,
    DropoutDarknet,
    LayerInfo,
    MaxPoolDarknet,
    NetworkSpec,
    SpaceToDepth,
    YoloLayer,
    activation,
)
from yolo4.errors import CfgError

__all__ = [
    "Conv",
    "Darknet",
    "DropoutDarknet",
    "LayerInfo",
    "MaxPoolDarknet",
    "SpaceToDepth",
    "activation",
    "infer_shapes",
]


def _resolve(spec: NetworkSpec, i: int, refs: list[int], key: str) -> tuple[int, ...]:
    out = []
    for r in refs:
        j = i + r if r < 0 else r
        if not 0 <= j < i:
            raise CfgError(
                f"{spec.where(i)}: [{spec.layers[i].KIND}] {key}={r} refers to layer {j}, "
                f"which does not exist before layer {i}"
            )
        out.append(j)
    return tuple(out)


def infer_shapes(spec: NetworkSpec, input_hw: tuple[int, int] | None = None) -> list[LayerInfo]:
    """Per-layer input/output shapes, sources, BFLOPs and params; checks every connection
    (each layer kind's `out_shape` and `cost`).

    Args:
        input_hw: (height, width) of the network input; default: the [net] size.
    Raises:
        CfgError naming the file and line of the first layer whose inputs do not fit.
    """
    h, w = input_hw or (spec.net.height, spec.net.width)
    shape = (spec.net.channels, h, w)
    infos: list[LayerInfo] = []
    for i, layer in enumerate(spec.layers):
        refs, key = layer.references()
        sources = _resolve(spec, i, refs, key)
        ref_shapes = [infos[j].out_chw for j in sources]
        out = layer.out_shape(shape, ref_shapes, spec.where(i))
        bflops, params = layer.cost(shape, ref_shapes, out)
        infos.append(LayerInfo(i, layer.KIND, sources, shape, out, bflops, params))
        shape = out
    return infos


class Darknet(nn.Module):
    """A darknet network as an nn.Module. See the module docstring for the forward contract."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        self.infos = infer_shapes(spec)
        self.blocks = nn.ModuleList(layer.build(info.in_chw) for layer, info in zip(spec.layers, self.infos))
        self.sources = [info.sources for info in self.infos]
        self.keep = sorted({j for info in self.infos for j in info.sources})
        self.head_indices = [i for i, layer in enumerate(spec.layers) if isinstance(layer, YoloLayer)]
        # the logistic convs whose output a new_coords head reads: their pre-activation in training
        logit_convs = sorted(i - 1 for i, layer in zip(self.head_indices, spec.yolo_layers) if layer.new_coords)
        unsupported = [i + 1 for i in logit_convs if not _is_logistic_conv(self.blocks[i])]
        if unsupported:
            raise CfgError(
                f"{spec.where(unsupported[0])}: a [yolo] layer with new_coords=1 must follow a "
                "[convolutional] layer with activation=logistic (its outputs are probabilities)"
            )
        for i in logit_convs:
            cast(Conv, self.blocks[i]).logits_in_training = True

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        return self.spec.yolo_layers

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.spec.net.height, self.spec.net.width

    def forward(self, x: Tensor) -> list[Tensor]:
        """x: (B, C, H, W) float in [0, 1]. Returns [(B, A*(5+C), H_i, W_i)] per [yolo] layer."""
        saved: dict[int, Tensor] = {}
        heads: list[Tensor] = []
        keep, heads_at = set(self.keep), set(self.head_indices)
        for i, block in enumerate(self.blocks):
            x = block(x, [saved[j] for j in self.sources[i]])
            if i in keep:
                saved[i] = x
            if i in heads_at:
                heads.append(x)
        return heads


def _is_logistic_conv(block: nn.Module) -> bool:
    return isinstance(block, Conv) and isinstance(block.act, nn.Sigmoid)
