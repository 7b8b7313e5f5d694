"""The PyTorch view of a darknet layer list.

    spec = read_cfg("yolov4.cfg")
    model = Darknet(spec)                    # nn.Module
    heads = model(images)                    # images: (B, 3, H, W) float in [0, 1], RGB
    # heads: list, one tensor per [yolo] layer in cfg order, each (B, A*(5+C), H_i, W_i),
    # exactly what darknet's [yolo] layer receives (decoding and NMS live in yolo4.ops).

`forward` walks the layer list with no data-dependent control flow: the loop and the
indices it reads are fixed when the module is built, so torch.compile, CUDA graphs and
ONNX export see a static graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolo4.darknet.cmbn import CmBatchNorm2d
from yolo4.darknet.layers import (
    Convolutional,
    Dropout,
    Layer,
    MaxPool,
    NetworkSpec,
    Reorg3d,
    Route,
    Sam,
    ScaleChannels,
    Shortcut,
    Upsample,
    YoloLayer,
)
from yolo4.errors import CfgError

# ---------------------------------------------------------------- shapes and cost


@dataclass(frozen=True)
class LayerInfo:
    """What one layer receives and produces at a given input size."""

    index: int
    kind: str
    sources: tuple[int, ...]  # absolute indices of earlier layers this layer reads
    in_chw: tuple[int, int, int]
    out_chw: tuple[int, int, int]
    bflops: float  # darknet's count: 2*MACs for conv, elements for maxpool/shortcut
    params: int  # trainable: conv weights + BN gamma/beta or conv bias


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
    """Per-layer input/output shapes, sources, BFLOPs and params; checks every connection.

    Args:
        input_hw: (height, width) of the network input; default: the [net] size.
    Raises:
        CfgError naming the file and line of the first layer whose inputs do not fit.
    """
    h, w = input_hw or (spec.net.height, spec.net.width)
    shape = (spec.net.channels, h, w)
    infos: list[LayerInfo] = []
    for i, layer in enumerate(spec.layers):
        where = spec.where(i)
        c, h, w = shape
        sources: tuple[int, ...] = ()
        bflops, params = 0.0, 0
        if isinstance(layer, Convolutional):
            if c % layer.groups or layer.filters % layer.groups:
                raise CfgError(
                    f"{where}: [convolutional] groups={layer.groups} does not divide "
                    f"input channels {c} and filters {layer.filters}"
                )
            p, k, s = layer.pad_pixels, layer.size, layer.stride
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if oh <= 0 or ow <= 0:
                raise CfgError(f"{where}: [convolutional] input {h}x{w} is too small for size={k}")
            out = (layer.filters, oh, ow)
            nweights = (c // layer.groups) * layer.filters * k * k
            bflops = 2.0 * nweights * oh * ow / 1e9
            params = nweights + layer.filters * (2 if layer.batch_normalize else 1)
        elif isinstance(layer, Route):
            sources = _resolve(spec, i, layer.layers, "layers")
            shapes = [infos[j].out_chw for j in sources]
            if len({s[1:] for s in shapes}) != 1:
                raise CfgError(
                    f"{where}: [route] layers={','.join(map(str, layer.layers))} joins outputs of "
                    f"different sizes {[s[1:] for s in shapes]}"
                )
            bad = [s[0] for s in shapes if s[0] % layer.groups]
            if bad:
                raise CfgError(f"{where}: [route] groups={layer.groups} does not divide channels {bad}")
            out = (sum(s[0] // layer.groups for s in shapes), *shapes[0][1:])
        elif isinstance(layer, Shortcut):
            sources = _resolve(spec, i, layer.from_, "from")
            for j in sources:
                if infos[j].out_chw != shape:
                    raise CfgError(
                        f"{where}: [shortcut] from={j - i} has shape {infos[j].out_chw} but the "
                        f"previous layer gives {shape} (channel mismatch)"
                    )
            out = shape
            bflops = c * h * w * len(sources) / 1e9
        elif isinstance(layer, MaxPool):
            k, s = layer.kernel, layer.stride
            oh, ow = (h + layer.pad_total - k) // s + 1, (w + layer.pad_total - k) // s + 1
            if oh <= 0 or ow <= 0:
                raise CfgError(f"{where}: [maxpool] input {h}x{w} is too small for size={k}")
            out = (c, oh, ow)
            bflops = k * k * c * oh * ow / 1e9
        elif isinstance(layer, Upsample):
            out = (c, h * layer.stride, w * layer.stride)
        elif isinstance(layer, (Dropout, YoloLayer)):
            out = shape
            if isinstance(layer, YoloLayer) and c != layer.channels:
                raise CfgError(
                    f"{where}: [yolo] expects {layer.channels} channels "
                    f"({len(layer.mask)} anchors x (5 + {layer.classes} classes)) but receives {c}"
                )
        elif isinstance(layer, Sam):
            sources = _resolve(spec, i, layer.from_, "from")
            if infos[sources[0]].out_chw != shape:
                raise CfgError(f"{where}: [sam] from layer has shape {infos[sources[0]].out_chw}, input {shape}")
            out = shape
        elif isinstance(layer, ScaleChannels):
            sources = _resolve(spec, i, layer.from_, "from")
            out = infos[sources[0]].out_chw
            if out[0] != c or (h, w) != (1, 1):
                raise CfgError(
                    f"{where}: [scale_channels] needs a (C,1,1) input and a (C,H,W) from layer; got {shape} and {out}"
                )
        elif isinstance(layer, Reorg3d):
            s = layer.stride
            if h % s or w % s:
                raise CfgError(f"{where}: [reorg3d] stride={s} does not divide input {h}x{w}")
            out = (c * s * s, h // s, w // s)
        else:  # pragma: no cover - LAYERS and this function must list the same types
            raise CfgError(f"{where}: no shape rule for [{layer.KIND}]")
        infos.append(LayerInfo(i, layer.KIND, sources, shape, out, bflops, params))
        shape = out
    return infos


# ---------------------------------------------------------------- modules


class HardMish(nn.Module):
    """darknet's hard_mish: x for x > 0, x*x/2 + x for -2 < x <= 0, else 0."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


ACTIVATION_MODULES = {
    "linear": nn.Identity,
    "leaky": lambda: nn.LeakyReLU(0.1),
    "mish": nn.Mish,
    "swish": nn.SiLU,
    "logistic": nn.Sigmoid,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "hard_mish": HardMish,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATION_MODULES[name]()
    except KeyError:
        raise CfgError(f"activation '{name}' has no PyTorch module here") from None


class Conv(nn.Module):
    """[convolutional]: Conv2d (bias only without BN) -> BatchNorm2d -> activation.

    BatchNorm eps is darknet's 1e-6 ((x - mean) / sqrt(var + 1e-6)), which OpenCV DNN also uses.
    `batch_normalize=2` (darknet's CmBN) builds a CmBatchNorm2d: BatchNorm2d's parameters and
    inference, statistics accumulated over the mini-batches of a step in training.
    """

    def __init__(self, layer: Convolutional, in_channels: int, bn_eps: float = 1e-6, bn_momentum: float = 0.03):
        super().__init__()
        bn = bool(layer.batch_normalize)
        self.conv = nn.Conv2d(
            in_channels, layer.filters, layer.size, layer.stride, layer.pad_pixels, groups=layer.groups, bias=not bn
        )
        norm = CmBatchNorm2d if layer.batch_normalize == 2 else nn.BatchNorm2d
        self.bn = norm(layer.filters, eps=bn_eps, momentum=bn_momentum) if bn else nn.Identity()
        self.act = activation(layer.activation)

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Concat(nn.Module):
    """[route]: channel concat of earlier outputs; with groups, chunk `group_id` of each."""

    def __init__(self, layer: Route):
        super().__init__()
        self.groups, self.group_id = layer.groups, layer.group_id

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        if self.groups > 1:
            refs = [r.chunk(self.groups, dim=1)[self.group_id] for r in refs]
        return refs[0] if len(refs) == 1 else torch.cat(refs, dim=1)


class Residual(nn.Module):
    """[shortcut]: x + sum(refs), then the activation."""

    def __init__(self, layer: Shortcut):
        super().__init__()
        self.act = activation(layer.activation)

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        for r in refs:
            x = x + r
        return self.act(x)


class MaxPoolDarknet(nn.Module):
    """[maxpool] with darknet's padding: `pad_total // 2` before, the rest after, -inf fill."""

    def __init__(self, layer: MaxPool):
        super().__init__()
        self.k, self.s = layer.kernel, layer.stride
        self.before = layer.pad_total // 2
        self.after = layer.pad_total - self.before

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        if self.before == self.after and self.before <= self.k // 2:  # symmetric: PyTorch pads with -inf itself
            return F.max_pool2d(x, self.k, self.s, self.before)
        if self.before or self.after:
            x = F.pad(x, (self.before, self.after, self.before, self.after), value=float("-inf"))
        return F.max_pool2d(x, self.k, self.s)


class UpsampleNearest(nn.Module):
    def __init__(self, layer: Upsample):
        super().__init__()
        self.stride, self.scale = layer.stride, layer.scale

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return x * self.scale if self.scale != 1.0 else x


class DropoutDarknet(nn.Module):
    """[dropout]: plain dropout, or DropBlock (`dropblock=1`, block `dropblock_size_abs`);
    identity in eval mode. `drop_scale` in [0, 1] lets a trainer ramp the rate up."""

    def __init__(self, layer: Dropout):
        super().__init__()
        self.p = layer.probability
        self.dropblock = layer.extra.get("dropblock", "0") == "1"
        self.block = int(float(layer.extra.get("dropblock_size_abs", "7")))
        self.drop_scale = 1.0

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        p = self.p * self.drop_scale
        if not self.training or p <= 0:
            return x
        if self.dropblock:
            from torchvision.ops import drop_block2d

            return drop_block2d(x, p, min(self.block, x.shape[-1], x.shape[-2]), inplace=False, training=True)
        return F.dropout(x, p, training=True)


class Multiply(nn.Module):
    """[sam] (same shapes) and [scale_channels] ((C,1,1) input broadcast over the from layer)."""

    def __init__(self, layer: Sam | ScaleChannels):
        super().__init__()
        self.act = activation(layer.activation)

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        return self.act(refs[0] * x)


class SpaceToDepth(nn.Module):
    """[reorg3d]: out[(dy*s + dx)*C + c, y, x] = in[c, y*s + dy, x*s + dx] (darknet's order)."""

    def __init__(self, layer: Reorg3d):
        super().__init__()
        self.s = layer.stride

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        b, c, h, w = x.shape
        s = self.s
        x = x.reshape(b, c, h // s, s, w // s, s)  # (B, C, H/s, dy, W/s, dx)
        return x.permute(0, 3, 5, 1, 2, 4).reshape(b, s * s * c, h // s, w // s)


class Head(nn.Module):
    """[yolo]: identity; the tensor is one of the network's outputs."""

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        return x


def _module(layer: Layer, info: LayerInfo) -> nn.Module:
    if isinstance(layer, Convolutional):
        return Conv(layer, info.in_chw[0])
    table = {
        Route: Concat,
        Shortcut: Residual,
        MaxPool: MaxPoolDarknet,
        Upsample: UpsampleNearest,
        Dropout: DropoutDarknet,
        Sam: Multiply,
        ScaleChannels: Multiply,
        Reorg3d: SpaceToDepth,
    }
    if isinstance(layer, YoloLayer):
        return Head()
    return table[type(layer)](layer)


class Darknet(nn.Module):
    """A darknet network as an nn.Module. See the module docstring for the forward contract."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.spec = spec
        self.infos = infer_shapes(spec)
        self.blocks = nn.ModuleList(_module(layer, info) for layer, info in zip(spec.layers, self.infos))
        self.sources = [info.sources for info in self.infos]
        self.keep = sorted({j for info in self.infos for j in info.sources})
        self.head_indices = [i for i, layer in enumerate(spec.layers) if isinstance(layer, YoloLayer)]

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
