"""Darknet layers as small dataclasses: the one network representation of yolo4.

A network is a `NetworkSpec`: the `[net]` options plus an ordered list of layers. Cfg files
(`cfg.py`), the Python builders (`yolo4.models.zoo`) and the PyTorch module (`network.py`)
are all views of it.

Each layer class knows its darknet section name (`KIND`), its typed keys (the dataclass
fields, with darknet's defaults) and keeps every other key it was given in `extra`, so that
keys only darknet's trainer reads survive a read/write round trip. It also owns everything
else that depends on its kind, so that a new kind is one class here (and one entry in
`LAYERS`):

    out_shape(chw, refs, where)  its output (C, H, W), or a CfgError when its inputs do not fit
    cost(chw, refs, out)         darknet's BFLOPs and the trainable parameters
    build(chw)                   its PyTorch module (defined next to it)
    describe(info)               its cells in `yolo4 info`'s table

`REFS` names the field listing the earlier layers it reads (`layers` of [route], `from` of
[shortcut]); the network resolves them and passes their output shapes as `refs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolo4.darknet.cmbn import CmBatchNorm2d
from yolo4.errors import CfgError

CHW = tuple[int, int, int]

ACTIVATIONS = (
    "linear",
    "leaky",
    "mish",
    "swish",
    "logistic",
    "relu",
    "relu6",
    "tanh",
    "elu",
    "selu",
    "gelu",
    "hard_mish",
    "relie",
    "ramp",
)


class HardMish(nn.Module):
    """darknet's hard_mish: x for x > 0, x*x/2 + x for -2 < x <= 0, else 0."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
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


@dataclass(frozen=True)
class LayerInfo:
    """What one layer receives and produces at a given input size."""

    index: int
    kind: str
    sources: tuple[int, ...]  # absolute indices of earlier layers this layer reads
    in_chw: CHW
    out_chw: CHW
    bflops: float  # darknet's count: 2*MACs for conv, elements for maxpool/shortcut
    params: int  # trainable: conv weights + BN gamma/beta or conv bias


class TableCells(NamedTuple):
    """A layer's cells in `yolo4 info`'s table (the shapes and BFLOPs come from its LayerInfo)."""

    kind: str
    filters: str = ""
    size: str = ""
    notes: str = ""
    show_input: bool = True


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip() != ""]


def _float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip() != ""]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    return str(value)


@dataclass
class Layer:
    """Base of every layer. `extra` holds keys this library does not interpret, verbatim;
    `line` is the cfg line of the section header (0 when built in Python), for errors."""

    KIND: ClassVar[str] = ""
    REFS: ClassVar[str] = ""  # the field listing the earlier layers it reads ("": only the previous one)
    extra: dict[str, str] = field(default_factory=dict, kw_only=True)
    line: int = field(default=0, kw_only=True, compare=False, repr=False)
    given: frozenset[str] = field(default=frozenset(), kw_only=True, compare=False, repr=False)  # keys in the cfg

    # ---- cfg text <-> dataclass
    @classmethod
    def parse_options(
        cls, options: dict[str, str], source: str = "<cfg>", line: int = 0, key_lines: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """Convert the typed keys from cfg strings; other keys go to `extra` verbatim.
        Errors name `source:line` of the offending key (of the header for a missing key)."""
        key_lines = key_lines or {}
        kwargs: dict[str, Any] = {}
        extra = dict(options)
        for f in dataclasses.fields(cls):
            if f.name in _META:
                continue
            key = f.metadata.get("key", f.name)
            if key not in extra:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise CfgError(f"{source}:{line}: [{cls.KIND}] is missing the required key '{key}'")
                continue
            raw = extra.pop(key)
            conv = f.metadata.get("conv") or _CONVERTERS[f.type if isinstance(f.type, str) else f.type.__name__]
            try:
                kwargs[f.name] = conv(raw)
            except (ValueError, TypeError, OverflowError):
                raise CfgError(
                    f"{source}:{key_lines.get(key, line)}: [{cls.KIND}] key '{key}' has an invalid value '{raw}'"
                ) from None
        kwargs["extra"] = extra
        return kwargs

    @classmethod
    def from_options(
        cls, options: dict[str, str], source: str = "<cfg>", line: int = 0, key_lines: dict[str, int] | None = None
    ) -> Layer:
        """Build and validate a layer from a cfg section's options."""
        layer = cls(**cls.parse_options(options, source, line, key_lines))
        layer.line, layer.given = line, frozenset(options)
        layer.validate(f"{source}:{line}")
        return layer

    def to_options(self) -> dict[str, str]:
        """The layer's keys as cfg strings: required ones, those read from a cfg, and others
        when not at darknet's default."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            if f.name in _META:
                continue
            value = getattr(self, f.name)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            )
            key = f.metadata.get("key", f.name)
            if required or value != default or f.metadata.get("always", False) or key in self.given:
                out[key] = _fmt(value)
        out.update(self.extra)
        return out

    def validate(self, where: str) -> None:
        """Check values that are wrong whatever the network (negative sizes, ...)."""

    # ---- what the kind means in a network
    def references(self) -> tuple[list[int], str]:
        """(the earlier layers it reads as written in the cfg, that key's name)."""
        if not self.REFS:
            return [], ""
        f = next(f for f in dataclasses.fields(self) if f.name == self.REFS)
        return list(getattr(self, self.REFS)), f.metadata.get("key", f.name)

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        """The output (C, H, W) given the previous layer's output `chw` and the outputs of the
        layers it references. Raises CfgError naming `where` when they do not fit."""
        raise NotImplementedError(f"[{self.KIND}] has no shape rule")

    def cost(self, chw: CHW, refs: list[CHW], out: CHW) -> tuple[float, int]:
        """(darknet's BFLOPs, trainable parameters); nothing by default."""
        return 0.0, 0

    def build(self, chw: CHW) -> nn.Module:
        """The PyTorch module: `forward(x, refs)` with x the previous output and refs the
        referenced outputs."""
        raise NotImplementedError(f"[{self.KIND}] has no module")

    def describe(self, info: LayerInfo) -> TableCells:
        """The layer's cells in `yolo4 info`'s table."""
        return TableCells(self.KIND)


_META = ("extra", "line", "given")

_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": lambda s: bool(int(s)),
    "list[int]": _int_list,
    "list[float]": _float_list,
}


def _positive(where: str, kind: str, **values: int) -> None:
    for k, v in values.items():
        if v <= 0:
            raise CfgError(f"{where}: [{kind}] key '{k}' must be positive, got {v}")


@dataclass
class Convolutional(Layer):
    """Conv2d + optional BatchNorm + activation. `pad=1` means padding = size // 2."""

    KIND: ClassVar[str] = "convolutional"
    filters: int = field(metadata={"always": True})
    size: int = field(default=1, metadata={"always": True})
    stride: int = field(default=1, metadata={"always": True})
    pad: int = field(default=0, metadata={"always": True})
    padding: int = 0
    groups: int = 1
    batch_normalize: int = 0
    activation: str = field(default="logistic", metadata={"always": True})

    @property
    def pad_pixels(self) -> int:
        return self.size // 2 if self.pad else self.padding

    def validate(self, where: str) -> None:
        _positive(where, self.KIND, filters=self.filters, size=self.size, stride=self.stride, groups=self.groups)
        if self.padding < 0:
            raise CfgError(f"{where}: [convolutional] key 'padding' must be >= 0, got {self.padding}")
        if self.activation not in ACTIVATIONS:
            raise CfgError(
                f"{where}: [convolutional] unknown activation '{self.activation}' (known: {', '.join(ACTIVATIONS)})"
            )
        for key in ("stride_x", "stride_y", "dilation"):
            if key in self.extra and int(self.extra[key]) != (self.stride if key != "dilation" else 1):
                raise CfgError(f"{where}: [convolutional] key '{key}' is not supported")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        c, h, w = chw
        if c % self.groups or self.filters % self.groups:
            raise CfgError(
                f"{where}: [convolutional] groups={self.groups} does not divide "
                f"input channels {c} and filters {self.filters}"
            )
        p, k, s = self.pad_pixels, self.size, self.stride
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if oh <= 0 or ow <= 0:
            raise CfgError(f"{where}: [convolutional] input {h}x{w} is too small for size={k}")
        return self.filters, oh, ow

    def cost(self, chw: CHW, refs: list[CHW], out: CHW) -> tuple[float, int]:
        nweights = (chw[0] // self.groups) * self.filters * self.size * self.size
        return 2.0 * nweights * out[1] * out[2] / 1e9, nweights + self.filters * (2 if self.batch_normalize else 1)

    def build(self, chw: CHW) -> nn.Module:
        return Conv(self, chw[0])

    def describe(self, info: LayerInfo) -> TableCells:
        notes = self.activation + (f", groups {self.groups}" if self.groups > 1 else "")
        notes += "" if self.batch_normalize else ", bias"
        return TableCells("conv", str(self.filters), f"{self.size:2d} x{self.size:2d}/{self.stride:2d}", notes)


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
        # set by Darknet on the logistic conv that a new_coords head reads: in training it hands
        # over its pre-activation (logits) for the loss. Decided here, inside the module's own
        # forward, so that every call goes through the same path (NNCF's QAT hooks key on it).
        self.logits_in_training = False

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        y = self.pre_activation(x)
        return y if self.logits_in_training and self.training else self.act(y)

    def pre_activation(self, x: Tensor) -> Tensor:
        """Conv2d -> BatchNorm2d: what the activation reads."""
        return self.bn(self.conv(x))


@dataclass
class Route(Layer):
    """Concatenate earlier outputs along channels; with `groups`, take chunk `group_id` of each."""

    KIND: ClassVar[str] = "route"
    REFS: ClassVar[str] = "layers"
    layers: list[int] = field(default_factory=list, metadata={"always": True})
    groups: int = 1
    group_id: int = 0

    def validate(self, where: str) -> None:
        if not self.layers:
            raise CfgError(f"{where}: [route] is missing the required key 'layers'")
        _positive(where, self.KIND, groups=self.groups)
        if not 0 <= self.group_id < self.groups:
            raise CfgError(f"{where}: [route] group_id={self.group_id} is outside 0..{self.groups - 1}")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        if len({s[1:] for s in refs}) != 1:
            raise CfgError(
                f"{where}: [route] layers={','.join(map(str, self.layers))} joins outputs of "
                f"different sizes {[s[1:] for s in refs]}"
            )
        bad = [s[0] for s in refs if s[0] % self.groups]
        if bad:
            raise CfgError(f"{where}: [route] groups={self.groups} does not divide channels {bad}")
        return sum(s[0] // self.groups for s in refs), refs[0][1], refs[0][2]

    def build(self, chw: CHW) -> nn.Module:
        return Concat(self)

    def describe(self, info: LayerInfo) -> TableCells:
        notes = "layers " + ", ".join(map(str, info.sources))
        if self.groups > 1:
            notes += f" (group {self.group_id} of {self.groups})"
        return TableCells(self.KIND, notes=notes, show_input=False)


class Concat(nn.Module):
    """[route]: channel concat of earlier outputs; with groups, chunk `group_id` of each."""

    def __init__(self, layer: Route):
        super().__init__()
        self.groups, self.group_id = layer.groups, layer.group_id

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        if self.groups > 1:
            refs = [r.chunk(self.groups, dim=1)[self.group_id] for r in refs]
        return refs[0] if len(refs) == 1 else torch.cat(refs, dim=1)


@dataclass
class Shortcut(Layer):
    """Residual sum: previous output + the outputs named by `from`, then `activation`."""

    KIND: ClassVar[str] = "shortcut"
    REFS: ClassVar[str] = "from_"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    activation: str = "linear"

    def validate(self, where: str) -> None:
        if not self.from_:
            raise CfgError(f"{where}: [shortcut] is missing the required key 'from'")
        if self.activation not in ACTIVATIONS:
            raise CfgError(f"{where}: [shortcut] unknown activation '{self.activation}'")
        if self.extra.get("weights_type", "none") != "none":
            raise CfgError(f"{where}: [shortcut] weights_type={self.extra['weights_type']} is not supported")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        for ref, shape in zip(self.from_, refs):
            if shape != chw:
                raise CfgError(
                    f"{where}: [shortcut] from={ref} has shape {shape} but the "
                    f"previous layer gives {chw} (channel mismatch)"
                )
        return chw

    def cost(self, chw: CHW, refs: list[CHW], out: CHW) -> tuple[float, int]:
        c, h, w = chw
        return c * h * w * len(refs) / 1e9, 0

    def build(self, chw: CHW) -> nn.Module:
        return Residual(self)

    def describe(self, info: LayerInfo) -> TableCells:
        act = f", {self.activation}" if self.activation != "linear" else ""
        return TableCells(self.KIND, notes="from " + ", ".join(map(str, info.sources)) + act)


class Residual(nn.Module):
    """[shortcut]: x + sum(refs), then the activation."""

    def __init__(self, layer: Shortcut):
        super().__init__()
        self.act = activation(layer.activation)

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        for r in refs:
            x = x + r
        return self.act(x)


@dataclass
class MaxPool(Layer):
    """Max pooling with darknet's padding rule: `padding` defaults to size-1, split
    `padding // 2` before and the rest after; out = (in + padding - size) // stride + 1."""

    KIND: ClassVar[str] = "maxpool"
    size: int = 0  # 0: same as stride (darknet's default)
    stride: int = field(default=1, metadata={"always": True})
    padding: int = -1  # -1: size - 1 (darknet's default)

    @property
    def kernel(self) -> int:
        return self.size or self.stride

    @property
    def pad_total(self) -> int:
        return self.kernel - 1 if self.padding < 0 else self.padding

    def validate(self, where: str) -> None:
        _positive(where, self.KIND, stride=self.stride, size=self.kernel)
        if self.padding < -1:
            raise CfgError(f"{where}: [maxpool] key 'padding' must be >= 0, got {self.padding}")
        if "maxpool_depth" in self.extra and self.extra["maxpool_depth"] != "0":
            raise CfgError(f"{where}: [maxpool] maxpool_depth is not supported")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        c, h, w = chw
        k, s = self.kernel, self.stride
        oh, ow = (h + self.pad_total - k) // s + 1, (w + self.pad_total - k) // s + 1
        if oh <= 0 or ow <= 0:
            raise CfgError(f"{where}: [maxpool] input {h}x{w} is too small for size={k}")
        return c, oh, ow

    def cost(self, chw: CHW, refs: list[CHW], out: CHW) -> tuple[float, int]:
        c, oh, ow = out
        return self.kernel * self.kernel * c * oh * ow / 1e9, 0

    def build(self, chw: CHW) -> nn.Module:
        return MaxPoolDarknet(self)

    def describe(self, info: LayerInfo) -> TableCells:
        return TableCells("max", size=f"{self.kernel:2d} x{self.kernel:2d}/{self.stride:2d}")


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


@dataclass
class Upsample(Layer):
    """Nearest-neighbour upsampling by `stride` (times `scale`)."""

    KIND: ClassVar[str] = "upsample"
    stride: int = field(default=2, metadata={"always": True})
    scale: float = 1.0

    def validate(self, where: str) -> None:
        _positive(where, self.KIND, stride=self.stride)

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        c, h, w = chw
        return c, h * self.stride, w * self.stride

    def build(self, chw: CHW) -> nn.Module:
        return UpsampleNearest(self)

    def describe(self, info: LayerInfo) -> TableCells:
        return TableCells(self.KIND, size=f"{self.stride:>4d}x")


class UpsampleNearest(nn.Module):
    def __init__(self, layer: Upsample):
        super().__init__()
        self.stride, self.scale = layer.stride, layer.scale

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return x * self.scale if self.scale != 1.0 else x


@dataclass
class Dropout(Layer):
    """Dropout (or DropBlock with `dropblock=1`) while training; identity at inference."""

    KIND: ClassVar[str] = "dropout"
    probability: float = 0.5

    def validate(self, where: str) -> None:
        if not 0.0 <= self.probability < 1.0:
            raise CfgError(f"{where}: [dropout] probability must be in [0, 1), got {self.probability}")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        return chw

    def build(self, chw: CHW) -> nn.Module:
        return DropoutDarknet(self)


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


def _check_from(layer: Sam | ScaleChannels, where: str) -> None:
    if len(layer.from_) != 1:
        raise CfgError(f"{where}: [{layer.KIND}] needs exactly one 'from' layer, got {layer.from_ or 'none'}")
    if layer.activation not in ACTIVATIONS:
        raise CfgError(f"{where}: [{layer.KIND}] unknown activation '{layer.activation}'")


@dataclass
class Sam(Layer):
    """Spatial attention (the paper's modified SAM): previous output * output of `from`."""

    KIND: ClassVar[str] = "sam"
    REFS: ClassVar[str] = "from_"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    activation: str = "linear"

    def validate(self, where: str) -> None:
        _check_from(self, where)

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        if refs[0] != chw:
            raise CfgError(f"{where}: [sam] from layer has shape {refs[0]}, input {chw}")
        return chw

    def build(self, chw: CHW) -> nn.Module:
        return Multiply(self)


@dataclass
class ScaleChannels(Layer):
    """Channel attention (SE): output of `from` (C, H, W) * previous output (C, 1, 1)."""

    KIND: ClassVar[str] = "scale_channels"
    REFS: ClassVar[str] = "from_"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    activation: str = "linear"

    def validate(self, where: str) -> None:
        _check_from(self, where)
        if self.extra.get("scale_wh", "0") != "0":
            raise CfgError(f"{where}: [scale_channels] scale_wh is not supported")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        out = refs[0]
        if out[0] != chw[0] or chw[1:] != (1, 1):
            raise CfgError(
                f"{where}: [scale_channels] needs a (C,1,1) input and a (C,H,W) from layer; got {chw} and {out}"
            )
        return out

    def build(self, chw: CHW) -> nn.Module:
        return Multiply(self)


class Multiply(nn.Module):
    """[sam] (same shapes) and [scale_channels] ((C,1,1) input broadcast over the from layer)."""

    def __init__(self, layer: Sam | ScaleChannels):
        super().__init__()
        self.act = activation(layer.activation)

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        return self.act(refs[0] * x)


@dataclass
class Reorg3d(Layer):
    """Space-to-depth by `stride` in darknet's channel order."""

    KIND: ClassVar[str] = "reorg3d"
    stride: int = 2

    def validate(self, where: str) -> None:
        _positive(where, self.KIND, stride=self.stride)

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        c, h, w = chw
        s = self.stride
        if h % s or w % s:
            raise CfgError(f"{where}: [reorg3d] stride={s} does not divide input {h}x{w}")
        return c * s * s, h // s, w // s

    def build(self, chw: CHW) -> nn.Module:
        return SpaceToDepth(self)


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


def _anchors(text: str) -> list[tuple[float, float]]:
    values = _float_list(text)
    if len(values) % 2:
        raise ValueError("odd number of anchor values")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


@dataclass
class YoloLayer(Layer):
    """A detection head. Identity in the forward pass; its keys drive decoding and the loss.

    `anchors` holds every anchor of the cfg (input pixels); this head uses `anchors[mask]`.
    """

    KIND: ClassVar[str] = "yolo"
    mask: list[int] = field(default_factory=list, metadata={"always": True})
    anchors: list[tuple[float, float]] = field(default_factory=list, metadata={"conv": _anchors, "always": True})
    classes: int = 20
    num: int = 1
    jitter: float = 0.2
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    scale_x_y: float = 1.0
    new_coords: int = 0
    iou_normalizer: float = 0.75
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    iou_loss: str = "mse"
    nms_kind: str = "default"
    beta_nms: float = 0.6
    label_smooth_eps: float = 0.0
    max_delta: float = float("inf")
    random: float = 0.0
    resize: float = 1.0

    @property
    def head_anchors(self) -> list[tuple[float, float]]:
        """The (w, h) anchors this head predicts with, in input pixels."""
        return [self.anchors[m] for m in self.mask]

    @property
    def channels(self) -> int:
        """Channels the head tensor must have: len(mask) * (5 + classes)."""
        return len(self.mask) * (5 + self.classes)

    def to_options(self) -> dict[str, str]:
        out = super().to_options()
        out["anchors"] = ", ".join(f"{_fmt(w)},{_fmt(h)}" for w, h in self.anchors)
        for key in ("classes", "num"):
            out[key] = str(getattr(self, key))
        return out

    def validate(self, where: str) -> None:
        if not self.mask:  # darknet: no mask means every anchor
            self.mask = list(range(self.num))
        if not self.anchors:
            raise CfgError(f"{where}: [yolo] is missing the required key 'anchors'")
        _positive(where, self.KIND, classes=self.classes)
        if self.num != len(self.anchors):
            raise CfgError(f"{where}: [yolo] num={self.num} but {len(self.anchors)} anchors are given")
        bad = [m for m in self.mask if not 0 <= m < len(self.anchors)]
        if bad:
            raise CfgError(f"{where}: [yolo] mask {bad} refers to anchors that do not exist (num={self.num})")
        if self.new_coords not in (0, 1):
            raise CfgError(f"{where}: [yolo] new_coords must be 0 or 1, got {self.new_coords}")

    def out_shape(self, chw: CHW, refs: list[CHW], where: str) -> CHW:
        if chw[0] != self.channels:
            raise CfgError(
                f"{where}: [yolo] expects {self.channels} channels "
                f"({len(self.mask)} anchors x (5 + {self.classes} classes)) but receives {chw[0]}"
            )
        return chw

    def build(self, chw: CHW) -> nn.Module:
        return Head()

    def describe(self, info: LayerInfo) -> TableCells:
        notes = f"mask {','.join(map(str, self.mask))}, {self.classes} classes, scale_x_y {self.scale_x_y:g}"
        return TableCells(self.KIND, notes=notes + (", new_coords" if self.new_coords else ""))


class Head(nn.Module):
    """[yolo]: identity; the tensor is one of the network's outputs."""

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        return x


LAYERS: dict[str, type[Layer]] = {
    cls.KIND: cls
    for cls in (Convolutional, Route, Shortcut, MaxPool, Upsample, Dropout, Sam, ScaleChannels, Reorg3d, YoloLayer)
}


@dataclass
class NetOptions:
    """The `[net]` section. Input geometry is typed; every other key (the trainer's
    hyper-parameters: batch, subdivisions, learning_rate, mosaic, ...) is kept in `options`."""

    width: int = 416
    height: int = 416
    channels: int = 3
    letter_box: bool = False
    options: dict[str, str] = field(default_factory=dict)
    line: int = field(default=0, compare=False, repr=False)

    def get(self, key: str, default: Any, type_: type = str) -> Any:
        """A raw [net] option converted to `type_`, or `default` when absent."""
        if key not in self.options:
            return default
        try:
            return type_(self.options[key])
        except ValueError:
            raise CfgError(f"[net] key '{key}' has an invalid value '{self.options[key]}'") from None

    @classmethod
    def from_options(cls, options: dict[str, str], source: str = "<cfg>", line: int = 0) -> NetOptions:
        where = f"{source}:{line}"
        rest = dict(options)
        try:
            kw = {k: int(rest.pop(k)) for k in ("width", "height", "channels") if k in rest}
            letter_box = bool(int(rest.pop("letter_box", "0")))
        except ValueError as e:
            raise CfgError(f"{where}: [net] has an invalid number ({e})") from None
        net = cls(**kw, letter_box=letter_box, options=rest, line=line)
        _positive(where, "net", width=net.width, height=net.height, channels=net.channels)
        return net

    def to_options(self) -> dict[str, str]:
        out = {"width": str(self.width), "height": str(self.height), "channels": str(self.channels)}
        if self.letter_box:
            out["letter_box"] = "1"
        out.update(self.options)
        return out


@dataclass
class NetworkSpec:
    """A whole darknet network: `[net]` options and the layer list, in cfg order.
    `source` names where it came from (a cfg path or a zoo name), for error messages."""

    net: NetOptions
    layers: list[Layer]
    source: str = field(default="<python>", compare=False)

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        return [layer for layer in self.layers if isinstance(layer, YoloLayer)]

    def where(self, index: int) -> str:
        """'file:line' (or 'file: layer N') of layer `index`, for error messages."""
        line = self.layers[index].line
        return f"{self.source}:{line}" if line else f"{self.source}: layer {index}"
