"""The PyTorch modules that exporters trace: the network plus, optionally, decoding.

    HeadsGraph(model)     x -> [head_i (B, A*(5+C), H_i, W_i)]         (what NPU toolchains take)
    DecodedGraph(model)   x -> boxes (B, N, 4) xyxy input pixels, scores (B, N, C) = obj * cls
    NmsInputsGraph(model) x -> boxes (B, N, 4), scores (B, C, N)        (ONNX NonMaxSuppression's
                          inputs; with labels="best" every box keeps only its best class's score)

Boxes and scores stay separate tensors: a shared (B, N, 4 + C) tensor gets one int8 scale
for pixel coordinates (0..640) and probabilities (0..1) together, which destroys the scores
(a known cause of int8 collapse). Each wrapper holds the network as `self.model`, so the
exported node names of the network start with "/model/" and those of decoding do not; the
int8 quantiser uses that to keep decoding in float.

Darknet's [maxpool] pads asymmetrically with -inf; the traced copy pads by repeating the
border instead (the same maxima, see MaxPoolEdgePad), because int8 calibration cannot
quantise -inf.

`decompose_mish(model)` returns a copy whose Mish activations are written as
x * tanh(softplus(x)), for runtimes without a Mish op (TFLite).
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolo4.darknet import Darknet
from yolo4.darknet.network import MaxPoolDarknet
from yolo4.errors import ExportError
from yolo4.ops.boxes import decode_heads

#: any nn.Module subclass (`decompose_mish` returns the type it is given)
M = TypeVar("M", bound=nn.Module)


class HeadsGraph(nn.Module):
    """The network alone. forward: x (B, 3, H, W) float [0, 1] RGB -> list of (B, A*(5+C), H_i, W_i)."""

    def __init__(self, model: Darknet):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.model(x))


class DecodedGraph(nn.Module):
    """Network + decoding. forward: x (B, 3, H, W) -> (boxes (B, N, 4) xyxy input pixels, scores (B, N, C)).

    scores = objectness * class probability, so `postprocess(boxes, ones, scores)` equals
    `postprocess(*decode_heads(...))`.
    """

    def __init__(self, model: Darknet, input_hw: tuple[int, int]):
        super().__init__()
        self.model = model
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        boxes, obj, cls = decode_heads(self.model(x), self.model.yolo_layers, self.input_hw)
        return boxes, obj.unsqueeze(-1) * cls  # (B, N, 4), (B, N, C)


class NmsInputsGraph(nn.Module):
    """Network + decoding, shaped for ONNX NonMaxSuppression.

    forward: x (B, 3, H, W) -> boxes (B, N, 4) xyxy, scores (B, C, N). With labels="best"
    only the highest-scoring class of each box keeps its score (the others are 0), so
    per-class NMS then equals `yolo4.ops.nms.postprocess(labels="best")`; with "all" every
    class keeps its score (darknet's rule).
    """

    def __init__(self, model: Darknet, input_hw: tuple[int, int], labels: str = "best"):
        super().__init__()
        if labels not in ("best", "all"):
            raise ValueError(f"unknown labels rule '{labels}'")
        self.decoded = DecodedGraph(model, input_hw)
        self.labels = labels

    @property
    def model(self) -> Darknet:
        return self.decoded.model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        boxes, scores = self.decoded(x)  # (B, N, 4), (B, N, C)
        if self.labels == "best":
            best = scores.argmax(dim=-1, keepdim=True)  # (B, N, 1)
            classes = torch.arange(scores.shape[-1], device=scores.device).view(1, 1, -1)
            scores = torch.where(classes == best, scores, torch.zeros_like(scores))
        return boxes, scores.transpose(1, 2)  # (B, N, 4), (B, C, N)


class MishDecomposed(nn.Module):
    """Mish as x * tanh(softplus(x)), softplus written as max(x, 0) + log1p(exp(-|x|)) (stable)."""

    def forward(self, x: Tensor) -> Tensor:
        softplus = F.relu(x) + torch.log1p(torch.exp(-x.abs()))
        return x * torch.tanh(softplus)


def decompose_mish(model: M) -> M:
    """A deep copy of `model` with every nn.Mish replaced by MishDecomposed (the input is not modified)."""
    out = copy.deepcopy(model)
    for _name, module in list(out.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Mish):
                setattr(module, child_name, MishDecomposed())
    return out


def uses_mish(model: nn.Module) -> bool:
    """Whether the module contains an nn.Mish activation."""
    return any(isinstance(m, nn.Mish) for m in model.modules())


class MaxPoolEdgePad(nn.Module):
    """darknet's [maxpool] with its padding done by repeating the border instead of -inf.

    A window that overlaps the padding also contains the border element the padding
    repeats (windows are contiguous and padding < kernel), so every max is unchanged; but
    the graph no longer holds -inf, which int8 calibration cannot give a scale to (an ONNX
    QDQ model of yolov4-tiny with -inf padding collapses to mAP 0)."""

    def __init__(self, pool: MaxPoolDarknet):
        super().__init__()
        self.k, self.s, self.before, self.after = pool.k, pool.s, pool.before, pool.after

    def forward(self, x: Tensor, refs: list[Tensor]) -> Tensor:
        x = F.pad(x, (self.before, self.after, self.before, self.after), mode="replicate")
        return F.max_pool2d(x, self.k, self.s)


def _pads_with_inf(pool: MaxPoolDarknet) -> bool:
    symmetric = pool.before == pool.after and pool.before <= pool.k // 2  # PyTorch's own padding path
    return bool(pool.before or pool.after) and not symmetric


def replace_inf_padding(model: Darknet) -> Darknet:
    """Swap (in place, on the caller's copy) every [maxpool] that pads with -inf for MaxPoolEdgePad."""
    for i, block in enumerate(model.blocks):
        if isinstance(block, MaxPoolDarknet) and _pads_with_inf(block):
            if max(block.before, block.after) >= block.k:
                raise ExportError(
                    f"{model.spec.where(i)}: [maxpool] padding {block.before}+{block.after} is not "
                    f"smaller than size={block.k}; a window would hold only padding"
                )
            model.blocks[i] = MaxPoolEdgePad(block)
    return model


def build_graph(model: Darknet, outputs: str, input_hw: tuple[int, int], labels: str = "best") -> nn.Module:
    """The wrapper for `outputs` ("heads", "decoded" or "nms") around a copy of `model`, in eval mode
    (the caller's module is not touched), -inf max-pool padding replaced by edge padding."""
    model = replace_inf_padding(copy.deepcopy(model))
    table = {
        "heads": lambda: HeadsGraph(model),
        "decoded": lambda: DecodedGraph(model, input_hw),
        "nms": lambda: NmsInputsGraph(model, input_hw, labels),
    }
    if outputs not in table:
        raise ValueError(f"unknown outputs '{outputs}' (choose from {', '.join(table)})")
    return table[outputs]().eval()
