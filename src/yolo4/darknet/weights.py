"""Darknet's binary `.weights` layout.

    header: int32 major, int32 minor, int32 revision, then `seen` (images seen in training):
            uint64 when major*10 + minor >= 2 (and both < 1000), else int32.
    then, for every [convolutional] layer in cfg order, float32 little-endian:
            with batch_normalize: biases(n), scales(n), rolling_mean(n), rolling_variance(n)
            without:              biases(n)
            then weights (n, c/groups, size, size).

No other layer type of the supported set carries weights. Loading checks the file size
against the network before reading anything, and names the expected and actual byte counts;
a file of another kind (a PyTorch checkpoint, an ONNX or TFLite model, a folder) is named as
such; values that are not finite, or a negative BatchNorm variance, are refused with their
layer. `upto=N` reads only layers 0..N-1 (backbone files such as `yolov4.conv.137`); it is an
explicit argument, never a fallback.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yolo4.darknet.network import Conv, Darknet
from yolo4.errors import WeightsError


@dataclass(frozen=True)
class WeightsHeader:
    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def seen_is_64bit(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def nbytes(self) -> int:
        return 12 + (8 if self.seen_is_64bit else 4)


def _convs(model: Darknet, upto: int | None) -> list[tuple[int, Conv]]:
    n = len(model.blocks) if upto is None else upto
    if not 0 < n <= len(model.blocks):
        raise WeightsError(
            f"upto={upto} is outside 1..{len(model.blocks)} (the network has {len(model.blocks)} layers)"
        )
    return [(i, b) for i, b in enumerate(model.blocks) if i < n and isinstance(b, Conv)]


def _conv_tensors(block: Conv) -> list[torch.Tensor]:
    """The tensors of one conv in file order."""
    if isinstance(block.bn, torch.nn.BatchNorm2d):
        bn = block.bn
        if bn.running_mean is None or bn.running_var is None:
            raise WeightsError("a BatchNorm2d without running statistics has no darknet weights layout")
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, block.conv.weight]
    if block.conv.bias is None:
        raise WeightsError("a convolution without batch norm must have a bias in the darknet weights layout")
    return [block.conv.bias, block.conv.weight]


def weights_nbytes(model: Darknet, upto: int | None = None, header: WeightsHeader = WeightsHeader()) -> int:
    """Size in bytes of the .weights file for `model` (layers below `upto`)."""
    return header.nbytes + 4 * sum(t.numel() for _, b in _convs(model, upto) for t in _conv_tensors(b))


def _other_format(head: bytes) -> str | None:
    """What a file that is not darknet weights is, from its first bytes (None: nothing known)."""
    if head.startswith(b"PK\x03\x04"):
        return (
            "a zip archive, as PyTorch writes .pt checkpoints: yolo4 reads darknet .weights "
            "(a training run writes best.weights beside best.pt)"
        )
    if head[4:8] == b"TFL3":
        return "a TFLite model: name it with the .tflite suffix (and no --cfg) to run it"
    if head.startswith(b"\x08") and b"pytorch" in head or b"onnx" in head[:64].lower():
        return "an ONNX model: name it with the .onnx suffix (and no --cfg) to run it"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return "a Python pickle, which yolo4 never loads (it could run code)"
    if head.lstrip().startswith(b"["):
        return "text, maybe a darknet .cfg: pass it as --cfg and the .weights as --weights"
    return None


def read_header(path: str | os.PathLike) -> WeightsHeader:
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; --weights wants a darknet .weights file")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights ({e.strerror or e})") from None
    other = _other_format(head)
    if other is not None:
        raise WeightsError(f"{path}: not darknet weights but {other}")
    if len(head) < 16:
        raise WeightsError(f"{path}: {len(head)} bytes is too short for a darknet weights header")
    major, minor, revision = struct.unpack("<3i", head[:12])
    h = WeightsHeader(major, minor, revision)
    if h.seen_is_64bit:
        if len(head) < 20:
            raise WeightsError(f"{path}: truncated header")
        seen = struct.unpack("<Q", head[12:20])[0]
    else:
        seen = struct.unpack("<i", head[12:16])[0]
    return WeightsHeader(major, minor, revision, seen)


def load_weights(model: Darknet, path: str | os.PathLike, upto: int | None = None) -> WeightsHeader:
    """Load darknet weights into `model` in place.

    Args:
        upto: read only layers 0..upto-1 (e.g. 137 for `yolov4.conv.137`); the file must then
            hold exactly those layers, or the whole network (whose first layers are read, as
            darknet's `partial` would cut them out).
    Raises:
        WeightsError naming the file, expected and actual sizes, when they differ.
    """
    path = Path(path)
    header = read_header(path)
    expected = weights_nbytes(model, upto, header)
    actual = path.stat().st_size
    whole_file = upto is not None and actual == weights_nbytes(model, None, header)
    if actual != expected and not whole_file:
        hint = ""
        if actual < expected and upto is None:
            hint = (
                " (a backbone file such as yolov4.conv.137 holds only the first layers: "
                "pass upto=N / --weights-upto N to load those explicitly)"
            )
        raise WeightsError(
            f"{path}: size {actual} bytes does not match the network "
            f"{model.spec.source} ({expected} bytes expected"
            f"{'' if upto is None else f' for layers 0..{upto - 1}'}){hint}"
        )
    data = np.fromfile(path, dtype="<f4", offset=header.nbytes, count=(expected - header.nbytes) // 4)
    pos = 0
    values = []
    for i, block in _convs(model, upto):
        for k, t in enumerate(_conv_tensors(block)):
            n = t.numel()
            v = data[pos : pos + n]
            if not np.isfinite(v).all():
                raise WeightsError(
                    f"{path}: layer {i} (convolutional) holds {int((~np.isfinite(v)).sum())} values that are not "
                    "finite numbers (NaN or inf): the training that wrote it diverged, or the file is damaged"
                )
            if k == 3 and len(_conv_tensors(block)) == 5 and (v < 0).any():  # rolling variance
                raise WeightsError(f"{path}: layer {i} (convolutional) has a negative BatchNorm variance: damaged file")
            values.append((t, v))
            pos += n
    assert pos == data.size, "size check above guarantees every value is used"
    with torch.no_grad():  # only a file that passed every check changes the model
        for t, v in values:
            t.copy_(torch.from_numpy(v.copy()).view_as(t))
    return header


def save_weights(
    model: Darknet, path: str | os.PathLike, upto: int | None = None, header: WeightsHeader = WeightsHeader()
) -> Path:
    """Write `model` in darknet's layout (atomically: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<3i", header.major, header.minor, header.revision))
        f.write(struct.pack("<Q" if header.seen_is_64bit else "<i", header.seen))
        for _, block in _convs(model, upto):
            for t in _conv_tensors(block):
                f.write(t.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    os.replace(tmp, path)
    return path
