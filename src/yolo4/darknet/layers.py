"""Darknet layers as small dataclasses: the one network representation of yolo4.

A network is a `NetworkSpec`: the `[net]` options plus an ordered list of layers. Cfg files
(`cfg.py`), the Python builders (`yolo4.models.zoo`) and the PyTorch module (`network.py`)
are all views of it.

Each layer class knows its darknet section name (`KIND`), its typed keys (the dataclass
fields, with darknet's defaults) and keeps every other key it was given in `extra`, so that
keys only darknet's trainer reads survive a read/write round trip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from yolo4.errors import CfgError

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


_META = ("extra", "line", "given")

_CONVERTERS = {
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


@dataclass
class Route(Layer):
    """Concatenate earlier outputs along channels; with `groups`, take chunk `group_id` of each."""

    KIND: ClassVar[str] = "route"
    layers: list[int] = field(default_factory=list, metadata={"always": True})
    groups: int = 1
    group_id: int = 0

    def validate(self, where: str) -> None:
        if not self.layers:
            raise CfgError(f"{where}: [route] is missing the required key 'layers'")
        _positive(where, self.KIND, groups=self.groups)
        if not 0 <= self.group_id < self.groups:
            raise CfgError(f"{where}: [route] group_id={self.group_id} is outside 0..{self.groups - 1}")


@dataclass
class Shortcut(Layer):
    """Residual sum: previous output + the outputs named by `from`, then `activation`."""

    KIND: ClassVar[str] = "shortcut"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    activation: str = "linear"

    def validate(self, where: str) -> None:
        if not self.from_:
            raise CfgError(f"{where}: [shortcut] is missing the required key 'from'")
        if self.activation not in ACTIVATIONS:
            raise CfgError(f"{where}: [shortcut] unknown activation '{self.activation}'")
        if self.extra.get("weights_type", "none") != "none":
            raise CfgError(f"{where}: [shortcut] weights_type={self.extra['weights_type']} is not supported")


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


@dataclass
class Upsample(Layer):
    """Nearest-neighbour upsampling by `stride` (times `scale`)."""

    KIND: ClassVar[str] = "upsample"
    stride: int = field(default=2, metadata={"always": True})
    scale: float = 1.0

    def validate(self, where: str) -> None:
        _positive(where, self.KIND, stride=self.stride)


@dataclass
class Dropout(Layer):
    """Dropout (or DropBlock with `dropblock=1`) while training; identity at inference."""

    KIND: ClassVar[str] = "dropout"
    probability: float = 0.5

    def validate(self, where: str) -> None:
        if not 0.0 <= self.probability < 1.0:
            raise CfgError(f"{where}: [dropout] probability must be in [0, 1), got {self.probability}")


def _check_from(layer: Sam | ScaleChannels, where: str) -> None:
    if len(layer.from_) != 1:
        raise CfgError(f"{where}: [{layer.KIND}] needs exactly one 'from' layer, got {layer.from_ or 'none'}")
    if layer.activation not in ACTIVATIONS:
        raise CfgError(f"{where}: [{layer.KIND}] unknown activation '{layer.activation}'")


@dataclass
class Sam(Layer):
    """Spatial attention (the paper's modified SAM): previous output * output of `from`."""

    KIND: ClassVar[str] = "sam"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    activation: str = "linear"

    def validate(self, where: str) -> None:
        _check_from(self, where)


@dataclass
class ScaleChannels(Layer):
    """Channel attention (SE): output of `from` (C, H, W) * previous output (C, 1, 1)."""

    KIND: ClassVar[str] = "scale_channels"
    from_: list[int] = field(default_factory=list, metadata={"key": "from", "always": True})
    activation: str = "linear"

    def validate(self, where: str) -> None:
        _check_from(self, where)
        if self.extra.get("scale_wh", "0") != "0":
            raise CfgError(f"{where}: [scale_channels] scale_wh is not supported")


@dataclass
class Reorg3d(Layer):
    """Space-to-depth by `stride` in darknet's channel order."""

    KIND: ClassVar[str] = "reorg3d"
    stride: int = 2

    def validate(self, where: str) -> None:
        _positive(where, self.KIND, stride=self.stride)


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
