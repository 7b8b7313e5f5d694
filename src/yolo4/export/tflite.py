"""TFLite export with Google's maintained converter: litert-torch (PyTorch -> LiteRT), its
PT2E int8 quantiser, and the ai-edge-litert interpreter to check the result.

    report = export_tflite(model, "yolov4-tiny.tflite", ExportOptions(format="tflite"), names)
    report = export_tflite(model, "yolov4-tiny-int8.tflite",
                           ExportOptions(format="tflite", int8=True, calib="data/shapes"), names, calib)

float32: the traced network (Mish written as x * tanh(softplus(x)), TFLite has no Mish op)
converted as is; checked against PyTorch on a second random input (relative difference
<= 1e-3).

int8 ("full integer", as NPUs such as the i.MX 8M Plus's need): PT2E static quantisation
(`litert_torch.quantize.pt2e_quantizer`: symmetric int8 weights per output channel,
asymmetric per-tensor int8 activations calibrated over the calibration images by histogram),
then converted, with these changes measured on real models (README, "int8 on a real model"):

- with NNCF installed (`int8_tool` "auto" or "nncf"), every layer output that NNCF's own
  post-training recipe quantises takes NNCF's calibrated range (`yolo4.export.qat.nncf_ranges`,
  the ONNX and OpenVINO int8's ranges) instead of PT2E's histogram: on the kangaroo
  yolov4-csp-leaky, scored on all 163 images, ΔmAP50 -3.49 -> -0.44 against fp32 (yolov4-tiny
  and yolo-fastest unchanged within their intervals); a QAT run's file takes the ranges QAT
  learned the same way (`int8_ranges`);

- before quantising, the inputs of depthwise convolutions are equalised across channels
  (`equalise_depthwise_inputs`, exact in float): always-negative leaky channels negated, every
  channel stretched to the tensor's range, the depthwise kernels compensating. NNCF gives these
  tensors one int8 scale per channel; TFLite has one per tensor, and yolo-fastest's first 1x1
  conv (8 channels, -1.4..14.7, two of them always negative) lost 3.4 dB of heads' SQNR there;

- the heads' int8 range is their calibrated min/max clipped to [-HEAD_RANGE, HEAD_RANGE]
  (logits beyond it change no score by more than 0.001); calibrated, it spanned -13..+21 on a one-class model, 0.13 per
  step, and that rounding alone cost yolov4-tiny 4 mAP50 points; a head that ends in a sigmoid
  (new_coords, `activation=logistic`) gets that range on the logits before it (`_head_logits`);
- a convolution output that a leaky ReLU consumes (TFLite quantises it before the activation
  as well as after) gets the range that minimises the error after the activation
  (`leaky_range`), not the one that fits the tensor itself;
- every int32 bias is re-expressed in its op's actual input scale (`_requantize_biases`):
  litert-torch 0.10 keeps a bias computed for a scale it then replaces when the tensor also
  feeds a concatenation, which multiplied one yolo-fastest bias by 6.5;
- a tensor read by a concatenation and by convolutions (yolo-fastest's layer 115: a 5x5
  depthwise conv and, through an upsample, the route) reaches the concatenation through a copy
  quantised on its own (`_copy_concat_inputs`): the file requantizes it (QUANTIZE int8 -> int8)
  into the concatenation's scale, where litert-torch 0.10 gave the tensor itself that scale and
  the conv read it 6.5x more coarsely (and refused the network when the other reader was a
  padded convolution: "'tfl.pad' op quantization parameters violate the same scale constraint");
- additions ([shortcut]) are annotated by yolo4: litert-torch 0.10's own `add` annotator matches
  nothing in torch 2.14's exported graphs, which left every shortcut in float (DEQUANTIZE -> ADD
  -> QUANTIZE), not full integer;
- every convolution's bias is corrected for the mean shift its int8 weights cause on the
  calibration images (`correct_biases`, as NNCF's fast bias correction), unless the weights were
  trained for int8 (`int8_bias_correction=False`, what a QAT run's TFLite file uses).

The converter gives an int8 input (scale ~1/255, zero point -128: pixels / 255 map to int8
exactly) and int8 outputs; yolo4 then appends a DEQUANTIZE to every int8 output so the file returns float32,
the seeds' "int8 input, float32 output" layout. With --outputs decoded only the network (`model.*`
modules) is quantised and decoding stays float32.

Metadata (`yolo4.*` keys, see `yolo4.export.common`) goes into the flatbuffer's metadata
table (name -> buffer of UTF-8 text); `yolo4.inference.runtime.tflite_metadata` reads it back.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import warnings
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from yolo4.darknet import Darknet
from yolo4.darknet.layers import Conv
from yolo4.errors import ExportError
from yolo4.export.common import ExportOptions, exported_spec, input_hw, metadata
from yolo4.export.graph import build_graph, decompose_mish
from yolo4.export.quantize import resolve_tool
from yolo4.inference.runtime import as_text

CHECK_ATOL = 1e-3  # float32 TFLite vs PyTorch, relative to max(1, |reference|)


def _require_litert_torch():
    try:
        import litert_torch
        from ai_edge_litert import schema_py_generated  # noqa: F401
        from ai_edge_litert.tools import flatbuffer_utils  # noqa: F401
    except ImportError as e:
        raise ExportError(f"TFLite export needs the 'tflite' extra: pip install 'yolo4[tflite]' ({e})") from None
    return litert_torch


@contextlib.contextmanager
def _quiet():
    """The converter logs every stage to stdout/stderr; keep library output clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.root.level
        logging.root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.root.setLevel(level)


def _convert_float(graph: nn.Module, x: torch.Tensor) -> bytes:
    litert_torch = _require_litert_torch()
    with _quiet():
        return bytes(litert_torch.convert(graph, (x,)).model_content())


def _block_index(path: str) -> int | None:
    """The Darknet block index in a module path such as "model.blocks.12.conv" (None outside blocks)."""
    m = re.search(r"blocks[.\[](\d+)", path)
    return int(m.group(1)) if m else None


HEAD_RANGE = 7.0  # int8 range of the heads' raw outputs: [-HEAD_RANGE, HEAD_RANGE]
# (sigmoid(-7) = 0.0009 < the lowest confidence threshold 0.001 and sigmoid(7) = 0.9991, exp(7) = 1097 anchors:
# logits beyond it change no score by more than 0.001 and no box at all)


def leaky_range(histogram: np.ndarray, lo: float, hi: float, slope: float, levels: int = 255) -> tuple[float, float]:
    """The int8 range [min, max] for a tensor that a leaky ReLU (negative `slope`) consumes:
    the (min, max) that minimises the squared error *after* the activation.

    The tensor is a convolution's output: TFLite cannot fuse a leaky ReLU into CONV_2D, so it
    is quantised once before the activation and once after it. A range fitted to the tensor
    itself (PT2E's histogram observer) spends half the codes on negative values that the
    activation then shrinks by `slope`; errors there count slope**2 as much here.

    Args:
        histogram: (K,) counts of the tensor's values over K equal bins spanning [lo, hi].
        slope: the leaky ReLU's negative slope (0.1 for darknet's leaky).
    Returns:
        (new_min, new_max) with lo <= new_min <= 0 <= new_max <= hi (candidates on a 64 x 64 grid).
    """
    h = np.asarray(histogram, dtype=np.float64)
    edges = np.linspace(lo, hi, len(h) + 1)
    c = (edges[:-1] + edges[1:]) / 2  # (K,) bin centres
    weight = np.where(c < 0, slope**2, 1.0) * h
    mins = np.linspace(lo, 0.0, 65)[:-1] if lo < 0 else np.array([lo])
    maxs = np.linspace(hi, 0.0, 65)[:-1] if hi > 0 else np.array([hi])
    a, b = mins[:, None, None], maxs[None, :, None]  # (M, 1, 1), (1, M, 1)
    step = (b - a) / levels
    clipped = np.where(c < a, a - c, np.where(c > b, c - b, 0.0))  # (M, M, K)
    err = np.where(clipped > 0, clipped**2, step**2 / 12) * weight
    i, j = np.unravel_index(int(np.argmin(err.sum(-1))), (len(mins), len(maxs)))
    return float(mins[i]), float(maxs[j])


@functools.cache
def _leaky_observer():
    """torchao's HistogramObserver with `leaky_range` as its range search (built on first use:
    torchao is an optional dependency)."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    class LeakyReluInputObserver(HistogramObserver):
        def __init__(self, *args: Any, slope: float = 0.1, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.slope = slope

        def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
            lo, hi = leaky_range(self.histogram.cpu().numpy(), float(self.min_val), float(self.max_val), self.slope)
            return torch.tensor(lo), torch.tensor(hi)

    return LeakyReluInputObserver


@functools.cache
def _head_observer():
    """torchao's MinMaxObserver whose range is clipped to [-HEAD_RANGE, HEAD_RANGE]: a head's
    calibrated range where it is narrower, never wider (built on first use)."""
    from torchao.quantization.pt2e.observer import MinMaxObserver

    class HeadObserver(MinMaxObserver):
        def calculate_qparams(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return self._calculate_qparams(
                self.min_val.clamp(-HEAD_RANGE, HEAD_RANGE), self.max_val.clamp(-HEAD_RANGE, HEAD_RANGE)
            )

    return HeadObserver


def equalising_scales(lo: np.ndarray, hi: np.ndarray, top: float | None = None, limit: float = 1e3) -> np.ndarray:
    """Per-channel factors that stretch each channel of a tensor over the tensor's whole range.

    A per-tensor int8 scale serves every channel with the step of the widest; multiplying
    channel c by scale[c] (and the next depthwise convolution's kernel c by 1 / scale[c], exact
    in float) gives each channel as many of the 256 codes as the shared range allows: the largest
    factor with scale[c] * [lo[c], hi[c]] inside [min(lo), top].

    Args:
        lo, hi: (C,) per-channel minimum and maximum of the tensor on the calibration images.
        top: the range's top (default max(hi)); channels above it get factors below 1.
        limit: largest factor (a channel that is ~0 everywhere is left alone).
    Returns:
        (C,) float64 factors in [1 / limit, limit].
    """
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    bottom = lo.min(initial=0.0)
    top = hi.max(initial=0.0) if top is None or top <= 0 else top
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(hi > 0, top / hi, np.inf)
        down = np.where(lo < 0, bottom / lo, np.inf)
    return np.clip(np.minimum(up, down), 1.0 / limit, limit)


def _scale_output_channels(block: Conv, factor: torch.Tensor) -> None:
    """Multiply a Conv block's pre-activation channels by `factor` (C,) (in place, BN or bias)."""
    if isinstance(block.bn, nn.BatchNorm2d):
        block.bn.weight.mul_(factor)
        block.bn.bias.mul_(factor)
    else:
        block.conv.weight.mul_(factor.view(-1, 1, 1, 1))
        if block.conv.bias is not None:
            block.conv.bias.mul_(factor)


def equalise_depthwise_inputs(model: Darknet, calib: np.ndarray, batch: int = 8) -> tuple[Darknet, list[int], int]:
    """A copy of `model` with the same function whose depthwise convolutions' inputs suit one
    int8 scale per tensor (TFLite has no per-channel activation scales, NNCF's ONNX int8 uses
    them for exactly these tensors). Returns (model, the blocks whose outputs were equalised,
    channels flipped).

    For each convolution (activation linear, ReLU or leaky) whose output only a depthwise
    convolution reads:
    - a leaky channel whose pre-activation is negative on every calibration image is negated
      (weights/BN), so the activation passes it at slope 1 instead of `slope`, and the depthwise
      kernel is multiplied by -slope: leaky(p) = -slope * leaky(-p) for p < 0. Such channels
      otherwise set the tensor's negative range that every other channel pays for, and are read
      at 1/slope of their precision before the activation;
    - every channel is then stretched by `equalising_scales` and the kernel divided by it (both
      convolutions have per-channel weight scales, so their rounding is unchanged).
    On yolo-fastest-1.1 the first 1x1 conv's 8 channels span -1.4..14.7 with two always-negative
    channels: the heads' SQNR (34 photos) went 23.5 -> 26.8 dB in the TFLite file.

    Args:
        calib: (N, 3, H, W) float32 calibration images in [0, 1].
    """
    model = deepcopy(model).eval()
    keep = set(model.keep) | set(model.head_indices)
    pairs = []
    for i in range(1, len(model.blocks)):
        a, b = model.blocks[i - 1], model.blocks[i]
        if not (isinstance(a, Conv) and isinstance(b, Conv)) or model.sources[i] or i - 1 in keep:
            continue
        if type(a.act) in (nn.Identity, nn.ReLU, nn.LeakyReLU) and b.conv.groups == b.conv.in_channels > 1:
            pairs.append(i - 1)
    if not pairs:
        return model, [], 0
    stats: dict[int, list[torch.Tensor]] = {}

    def hook(k: int):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            pre = cast(Conv, module).pre_activation(inputs[0])
            now = [out.amin((0, 2, 3)), out.amax((0, 2, 3)), pre.amin((0, 2, 3)), pre.amax((0, 2, 3))]
            old = stats.get(k)
            merge = (torch.minimum, torch.maximum) * 2
            stats[k] = now if old is None else [f(a, b) for f, a, b in zip(merge, old, now)]

        return record

    hooks = [model.blocks[k].register_forward_hook(hook(k)) for k in pairs]
    try:
        with torch.no_grad():
            for i in range(0, len(calib), batch):
                model(torch.from_numpy(calib[i : i + batch]))
    finally:
        for h in hooks:
            h.remove()
    flipped = 0
    with torch.no_grad():
        for k in pairs:
            a, b = cast(Conv, model.blocks[k]), cast(Conv, model.blocks[k + 1])
            lo, hi, pre_lo, pre_hi = stats[k]
            flip = torch.zeros_like(lo, dtype=torch.bool)
            if isinstance(a.act, nn.LeakyReLU) and a.act.negative_slope > 0:
                flip = pre_hi < 0
            # the range's top is the unflipped channels' (a negated channel scales to fit under it)
            top = float(hi[~flip].max()) if (~flip).any() else None
            if flip.any():
                lo, hi = torch.where(flip, -pre_hi, lo), torch.where(flip, -pre_lo, hi)
                b.conv.weight.mul_(torch.where(flip, -cast(nn.LeakyReLU, a.act).negative_slope, 1.0).view(-1, 1, 1, 1))
                flipped += int(flip.sum())
            sign = torch.where(flip, -1.0, 1.0)
            factor = torch.from_numpy(equalising_scales(lo.numpy(), hi.numpy(), top)).float()
            _scale_output_channels(a, sign * factor)
            b.conv.weight.div_(factor.view(-1, 1, 1, 1))
    return model, pairs, flipped


def _head_logits(node: torch.fx.Node) -> torch.fx.Node:
    """The logits of a head's output `node`: its input where the head ends in a sigmoid (a
    new_coords head's `activation=logistic`), else the node itself.

    The sigmoid's int8 output has TFLite's fixed scale (1/256, zero point -128); what PT2E
    calibrates is the conv output before it, and on a one-class yolov4-csp-leaky its histogram
    range reached +107 (class logits that are always large), 0.47 per step for the box and
    objectness logits around 0."""
    return (
        node.args[0]
        if node.target is torch.ops.aten.sigmoid.default and isinstance(node.args[0], torch.fx.Node)
        else node
    )


_UPSAMPLE = (torch.ops.aten.upsample_nearest2d.vec, torch.ops.aten.upsample_nearest2d.default)


def _copy_concat_inputs(graph: torch.fx.Graph, inside: Callable[[torch.fx.Node], bool]) -> list[tuple[Any, Any]]:
    """Route every concatenation input that convolutions also read through a copy of its own
    (`aten.clone`, placed before the upsample when one leads to the concatenation); returns
    (tensor, copy) pairs, each copy to be annotated as reading its tensor at the tensor's own scale.

    TFLite's CONCATENATION (and RESIZE_NEAREST_NEIGHBOR before it) needs its inputs at the
    output's scale; litert-torch 0.10 can meet that by giving the tensor itself the
    concatenation's scale, so the convolutions read it with the coarser step too (yolo-fastest:
    the 5x5 depthwise conv read layer 115's output at 0.143 per step where its calibration chose
    0.022), or by refusing the network when a padded convolution reads it. From a quantised copy
    the converter writes a requantize (QUANTIZE int8 -> int8) instead. Tensors with other readers
    are left alone: max pools feeding only the concatenation (SPP) share its scale anyway, and a
    route's channel slice (yolov4-tiny) made the converter refuse the copy.
    """
    pairs = []
    for cat in [n for n in graph.nodes if n.target is torch.ops.aten.cat.default and inside(n)]:
        for a in dict.fromkeys(cat.args[0]):
            reader, src = (a, a.args[0]) if a.target in _UPSAMPLE and len(a.users) == 1 else (cat, a)
            others = [u for u in src.users if u not in (reader, cat)]
            if not others or any(u.target is not torch.ops.aten.conv2d.default for u in others) or not inside(src):
                continue
            with graph.inserting_after(src):
                copy = graph.call_function(torch.ops.aten.clone.default, (src,))
            copy.meta.update({k: src.meta[k] for k in ("val", "tensor_meta", "nn_module_stack") if k in src.meta})
            reader.replace_input_with(src, copy)
            pairs.append((src, copy))
    return pairs


def _block_output(node: torch.fx.Node) -> int | None:
    """The Darknet block whose output `node` is (every reader lies outside the block), else None."""
    stack = node.meta.get("nn_module_stack") or {}
    blocks = [b for b in (_block_index(str(path)) for path, _ in stack.values()) if b is not None]
    if not blocks:
        return None
    inner = blocks[-1]
    readers = [r for u in node.users for r in (u.users if u.target is torch.ops.aten.clone.default else [u])]
    for user in readers:  # (through the copies `_copy_concat_inputs` makes)
        theirs = [_block_index(str(path)) for path, _ in (user.meta.get("nn_module_stack") or {}).values()]
        if inner in theirs:
            return None
    return inner


def _yolo_quantizer(
    network_only: bool = True, keep_float: tuple[int, ...] = (), fixed: dict[int, tuple[float, float]] | None = None
):
    """litert-torch's PT2EQuantizer (symmetric per-channel int8 weights, asymmetric per-tensor
    int8 activations, histogram calibration) with five changes for YOLO networks, and a sixth
    for a QAT model:

    - a convolution output that a leaky ReLU consumes gets its range from `leaky_range`;
    - the heads (the network's outputs; the logits before the sigmoid of a head that ends in
      one) get their calibrated min/max clipped to [-HEAD_RANGE, HEAD_RANGE]: PT2E's range is
      set by logits far beyond where sigmoid and exp saturate (one-class scores at +20,
      background objectness at -13), 0.13 per int8 step;
    - a concatenation input that convolutions also read gets a copy of its own for the
      concatenation (`_copy_concat_inputs`), so the convolutions read it at its own scale;
    - additions are annotated (int8 inputs and output), which its own annotator misses;
    - only nodes inside the Darknet module are annotated (with `network_only`), so decoding
      stays float32, and none of the `keep_float` blocks (mixed precision);
    - the output of each block in `fixed` ({block: (min, max)}) gets that range, not a calibrated
      one: the ranges a QAT run trained its weights with.

    (Its own module-name/type filters do not match torch.export's nn_module_stack keys in
    litert-torch 0.10, and they reject weight nodes, which carry no stack.)"""
    from litert_torch.quantize import pt2e_quantizer
    from torchao.quantization.pt2e.observer import FixedQParamsObserver
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec

    darknet = f"{Darknet.__module__}.{Darknet.__qualname__}"
    floats = set(keep_float)
    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)

    def in_network(node) -> bool:
        stack = node.meta.get("nn_module_stack")
        if stack is None:
            return True
        return any(str(t) == darknet or getattr(t, "__qualname__", None) == "Darknet" for _, t in stack.values())

    def inside(node) -> bool:
        stack = node.meta.get("nn_module_stack")
        if stack is None:
            return True
        if floats and any(_block_index(str(path)) in floats for path, _ in stack.values()):
            return False
        return not network_only or in_network(node)

    def int8_activations(observer) -> QuantizationSpec:  # asymmetric per-tensor int8 with `observer`
        return QuantizationSpec(
            dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
            observer_or_fake_quant_ctr=observer,
        )  # fmt: skip

    def annotated(node):
        ann = node.meta.get("quantization_annotation")
        out = getattr(ann, "output_qspec", None)
        return ann if isinstance(out, QuantizationSpec) else None

    class YoloQuantizer(pt2e_quantizer.PT2EQuantizer):
        def transform_for_annotation(self, model):
            for src, copy in _copy_concat_inputs(model.graph, inside):
                copy.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={src: config.input_activation}, _annotated=True
                )
            model.recompile()
            return model

        def _annotate_for_static_quantization_config(self, model):
            model = self._annotate_all_static_patterns(model, self.global_config, inside)
            for node in model.graph.nodes:  # litert-torch's add annotator finds none in torch 2.14's graphs
                args = node.args[:2]
                if (
                    node.target is torch.ops.aten.add.Tensor
                    and inside(node)
                    and annotated(node) is None
                    and all(isinstance(a, torch.fx.Node) for a in args)
                ):
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map=dict.fromkeys(args, config.input_activation),
                        output_qspec=config.output_activation,
                        _annotated=True,
                    )
            for node in model.graph.nodes:
                if node.op != "call_function" or "leaky_relu" not in str(node.target):
                    continue
                src = node.args[0]
                ann = annotated(src) if len(src.users) == 1 else None
                if ann is not None:
                    slope = float(node.args[1]) if len(node.args) > 1 else 0.01
                    ann.output_qspec = int8_activations(_leaky_observer().with_args(eps=2**-12, slope=slope))
            for node in model.graph.nodes:  # a block output is quantised as its own output or as its readers' input
                block = _block_output(node) if fixed and inside(node) else None
                if block not in (fixed or {}):
                    continue
                lo, hi = (fixed or {})[cast(int, block)]
                scale = (hi - lo) / 255
                spec = int8_activations(
                    FixedQParamsObserver.with_args(scale=scale, zero_point=int(np.clip(round(-128 - lo / scale), -128, 127)),
                                                   dtype=torch.int8, quant_min=-128, quant_max=127)
                )  # fmt: skip
                ann = annotated(node)
                if ann is not None:
                    ann.output_qspec = spec
                for user in node.users:
                    theirs = getattr(user.meta.get("quantization_annotation"), "input_qspec_map", {})
                    if isinstance(theirs.get(node), QuantizationSpec):
                        theirs[node] = spec
            head = int8_activations(_head_observer().with_args(eps=2**-12))
            for node in model.graph.nodes:
                if not in_network(node) or not any(u.op == "output" or not in_network(u) for u in node.users):
                    continue
                ann = annotated(_head_logits(node))
                if ann is not None:
                    ann.output_qspec = head
            return model

    return YoloQuantizer().set_global(config)


def _convert_int8(
    graph: nn.Module,
    x: torch.Tensor,
    calib: np.ndarray,
    network_only: bool,
    keep_float: tuple[int, ...] = (),
    fixed: dict[int, tuple[float, float]] | None = None,
    bias_correction: bool = True,
) -> bytes:
    """PT2E static int8 (per-channel weights), calibrated on `calib` (N, 3, H, W) in batches of
    x's size, with `fixed` block output ranges (see `_yolo_quantizer`), then `correct_biases`
    unless told not to."""
    litert_torch = _require_litert_torch()
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import quantize_pt2e

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    quantizer = _yolo_quantizer(network_only, keep_float, fixed)
    batch = x.shape[0]
    with _quiet():
        exported = torch.export.export(graph, (x,)).module()
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        if not any("observer" in type(m).__name__.lower() for m in prepared.modules()):
            raise ExportError("the int8 quantiser found no layer to quantise in this network")
        with torch.no_grad():
            for i in range(0, len(calib) - batch + 1, batch):
                prepared(torch.from_numpy(calib[i : i + batch]))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        if bias_correction:
            correct_biases(converted, calib, batch)
        # QuantConfig only tells the converter the QDQ mode (static); it reads it from a global config
        mode = pt2e_quantizer.PT2EQuantizer().set_global(config)
        edge = litert_torch.convert(converted, (x,), quant_config=quant_config.QuantConfig(pt2e_quantizer=mode))
        return bytes(edge.model_content())


def correct_biases(gm: torch.fx.GraphModule, calib: np.ndarray, batch: int = 1) -> int:
    """Empirical bias correction of a PT2E-converted graph (in place); returns how many
    convolutions were corrected.

    Rounding a convolution's weights to int8 shifts each output channel's mean (3x3 depthwise
    kernels: 9 weights per channel, the shift does not average out). For each convolution in
    graph order, on the calibration images and the int8 graph's own input to it, the mean per
    channel of conv(x, int8 weights) - conv(x, float weights) is subtracted from its float bias
    (the converter then rounds the bias to int32); later convolutions see the corrected ones.
    NNCF's ONNX int8 does the same ("fast bias correction"). yolo-fastest-1.1, simulated heads'
    SQNR after `equalise_depthwise_inputs`: 27.2 -> 28.3 dB.

    Args:
        gm: `convert_pt2e(..., fold_quantize=False)` output: each conv's weight is
            dequantize(quantize(get_attr)) and its bias a float get_attr.
        calib: (N, 3, H, W) float32 images in [0, 1], run `batch` at a time (the export's batch).
    """

    def attr(target: str) -> torch.Tensor:
        return cast(torch.Tensor, functools.reduce(getattr, target.split("."), gm))

    convs = {}  # conv node -> (float weight, float bias)
    for n in gm.graph.nodes:
        if n.target is not torch.ops.aten.conv2d.default or len(n.args) < 3:
            continue
        w, b = n.args[1], n.args[2]
        q = w.args[0] if isinstance(w, torch.fx.Node) and w.args and isinstance(w.args[0], torch.fx.Node) else None
        src = q.args[0] if q is not None and q.args and isinstance(q.args[0], torch.fx.Node) else None
        if src is not None and src.op == "get_attr" and isinstance(b, torch.fx.Node) and b.op == "get_attr":
            convs[n] = (attr(str(src.target)), attr(str(b.target)))
    shift = {n: torch.zeros(()) for n in convs}

    class Shifted(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            if n not in convs:
                return super().run_node(n)
            args, _ = self.fetch_args_kwargs_from_env(n)
            x, wq, bias, rest = args[0], args[1], args[2], args[3:]
            yq = torch.ops.aten.conv2d.default(x, wq, None, *rest)
            d = (yq - torch.ops.aten.conv2d.default(x, convs[n][0], None, *rest)).mean((0, 2, 3))
            shift[n] = shift[n] + d * len(x)
            return yq - d.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)

    count = 0
    with torch.no_grad():
        for i in range(0, len(calib) - batch + 1, batch):
            Shifted(gm).run(torch.from_numpy(calib[i : i + batch]))
            count += batch
        for n, (_, bias) in convs.items():
            bias.sub_(shift[n] / max(count, 1))
    return len(convs)


def _opcode_index(model: Any, builtin: int, version: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _requantize_biases(m: Any) -> int:
    """Make every int32 bias agree with its op's input and weight scales (TFLite's rule:
    bias_scale[c] = input_scale * weight_scale[c]); returns how many biases were rewritten.

    litert-torch 0.10 quantises a bias with the scale its PT2E input observer chose, but when
    that tensor also feeds a concatenation (shared scale), the converter gives the tensor the
    concatenation's scale and keeps the old bias: the kernels then read the bias with the wrong
    scale (seen on yolo-fastest's 5x5 depthwise convolution after SPP: 6.5x its bias)."""
    from ai_edge_litert import schema_py_generated as schema

    ops = {
        schema.BuiltinOperator.CONV_2D,
        schema.BuiltinOperator.DEPTHWISE_CONV_2D,
        schema.BuiltinOperator.FULLY_CONNECTED,
        schema.BuiltinOperator.TRANSPOSE_CONV,
    }
    fixed = 0
    for sg in m.subgraphs:
        for op in sg.operators:
            code = m.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) not in ops:
                continue
            bias_at = 3 if code.builtinCode == schema.BuiltinOperator.TRANSPOSE_CONV else 2
            ins = list(op.inputs)
            if len(ins) <= bias_at or ins[bias_at] < 0:
                continue
            x_t, w_t, b_t = sg.tensors[ins[0 if bias_at == 2 else 2]], sg.tensors[ins[1]], sg.tensors[ins[bias_at]]
            if b_t.type != schema.TensorType.INT32 or x_t.quantization is None or w_t.quantization is None:
                continue
            x_scale = float(np.asarray(x_t.quantization.scale)[0])
            want = x_scale * np.asarray(w_t.quantization.scale, dtype=np.float64)
            have = np.asarray(b_t.quantization.scale, dtype=np.float64)
            if want.shape != have.shape or np.allclose(want, have, rtol=1e-6):
                continue
            buf = m.buffers[b_t.buffer]
            old = np.frombuffer(np.asarray(buf.data, dtype=np.uint8).tobytes(), dtype=np.int32).astype(np.float64)
            new = np.clip(np.round(old * have / want), -(2**31) + 1, 2**31 - 1).astype(np.int32)
            buf.data = np.frombuffer(new.tobytes(), dtype=np.uint8).copy()
            b_t.quantization.scale = [float(v) for v in want]
            fixed += 1
    return fixed


def finish_flatbuffer(content: bytes, meta: dict[str, str]) -> bytes:
    """Append DEQUANTIZE to every int8/uint8 graph output (float32 outputs) and write `meta`
    into the model's metadata table. Returns the new flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    _requantize_biases(m)
    sg = m.subgraphs[0]
    renamed: dict[int, int] = {}
    for out_idx in list(sg.outputs):
        t = sg.tensors[out_idx]
        if t.type not in (schema.TensorType.INT8, schema.TensorType.UINT8):
            continue
        f = schema.TensorT()
        f.shape = list(t.shape)
        f.shapeSignature = list(t.shapeSignature) if t.shapeSignature is not None else None
        f.type = schema.TensorType.FLOAT32
        f.name = t.name
        f.buffer = 0  # buffer 0 is the empty sentinel: a runtime tensor
        t.name = (t.name.decode() if isinstance(t.name, bytes) else str(t.name)) + "_int8"
        sg.tensors.append(f)
        op = schema.OperatorT()
        op.opcodeIndex = _opcode_index(m, schema.BuiltinOperator.DEQUANTIZE, 2)
        op.inputs, op.outputs = [out_idx], [len(sg.tensors) - 1]
        sg.operators.append(op)
        renamed[out_idx] = len(sg.tensors) - 1
    sg.outputs = [renamed.get(i, i) for i in sg.outputs]
    for sig in m.signatureDefs or []:
        for tmap in sig.outputs or []:
            tmap.tensorIndex = renamed.get(tmap.tensorIndex, tmap.tensorIndex)
    m.metadata = [md for md in (m.metadata or []) if not as_text(md.name).startswith("yolo4.")]
    for key, value in meta.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(value.encode("utf-8"), dtype=np.uint8).copy()
        m.buffers.append(buf)
        md = schema.MetadataT()
        md.name = key
        md.buffer = len(m.buffers) - 1
        m.metadata.append(md)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _compare(content: bytes, graph: nn.Module, x: torch.Tensor, path: Path) -> float:
    """Max difference (relative to max(1, |ref|)) between the interpreter and `graph(x)`."""
    from yolo4.inference.runtime import TfliteModel

    tmp = path.with_name(path.name + ".check")
    tmp.write_bytes(content)
    try:
        runner = TfliteModel(tmp)
        got = runner._run(x.numpy())
    finally:
        tmp.unlink(missing_ok=True)
    with torch.no_grad():
        ref = graph(x)
    ref = [r.numpy() for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    if len(got) != len(ref):
        raise ExportError(f"{path}: {len(got)} TFLite outputs but PyTorch gives {len(ref)}")
    worst = 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            raise ExportError(f"{path}: TFLite output shape {g.shape} differs from PyTorch's {r.shape}")
        worst = max(worst, float(np.abs(g - r).max(initial=0.0)) / max(1.0, float(np.abs(r).max(initial=0.0))))
    return worst


def export_tflite(
    model: Darknet,
    path: str | os.PathLike,
    options: ExportOptions,
    names: list[str],
    calib: np.ndarray | None = None,
    calib_source: str = "",
) -> dict[str, Any]:
    """Export `model` to a .tflite file (float32, or full int8 with options.int8).

    Args:
        model: a Darknet module (not modified).
        options: format "tflite"; heads or decoded outputs, static batch.
        names: class names for the metadata.
        calib: float32 (N, 3, H, W) calibration images in [0, 1], required with options.int8.
    Returns:
        {"path", "outputs", "max_abs_diff" (float32 vs PyTorch, relative; for int8 the
        int8-vs-float difference, informative only), "quantization"}.
    Raises:
        ExportError for options TFLite cannot honour (before writing), or when the float32
        file disagrees with PyTorch.
    """
    options.validate()
    if options.format != "tflite":
        raise ExportError(f"export_tflite got format '{options.format}'")
    if options.int8 and calib is None:
        raise ExportError("int8 export needs calibration images")
    _require_litert_torch()
    hw = input_hw(model, options)
    equalised: list[int] = []
    flipped = 0
    if options.int8 and calib is not None:
        model, equalised, flipped = equalise_depthwise_inputs(model, calib)
    ranges = {i: (lo, hi) for i, lo, hi in options.int8_ranges}
    ranges_from = "the ranges quantisation-aware training learned" if ranges else ""
    if options.int8 and calib is not None and not ranges and resolve_tool(options.int8_tool) == "nncf":
        from yolo4.export.qat import nncf_ranges

        ranges = nncf_ranges(model, torch.from_numpy(calib))
        ranges_from = "NNCF's calibrated ranges (the ONNX and OpenVINO int8 recipe's)"
    fixed = {i: r for i, r in ranges.items() if i not in equalised}
    graph = build_graph(decompose_mish(model), options.outputs, hw, options.postprocess.labels)
    spec = exported_spec(model, options.img_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(options.batch, 3, *hw, generator=torch.Generator().manual_seed(0))
    quant: dict[str, Any] | None = None
    try:
        if options.int8:
            if calib is None:  # checked above; narrows the type
                raise ExportError("int8 export needs calibration images")
            if len(calib) < options.batch:
                raise ExportError(f"{len(calib)} calibration images for a batch of {options.batch}")
            content = _convert_int8(
                graph,
                x,
                calib,
                options.outputs != "heads",
                options.int8_keep_float,
                fixed,
                options.int8_bias_correction,
            )
            corrected = "corrected and " if options.int8_bias_correction else "(trained for int8, not corrected) "
            quant = {
                "tool": f"litert-torch PT2E (litert_torch.quantize.pt2e_quantizer), biases {corrected}re-scaled by yolo4",
                "weights": "int8 symmetric, per output channel",
                "activations": "int8 asymmetric, per tensor, histogram calibration (PT2E HistogramObserver); "
                "inputs of leaky ReLUs: range minimising the error after the activation; "
                f"heads (the logits before a head's sigmoid): min/max clipped to [-{HEAD_RANGE:g}, {HEAD_RANGE:g}]; "
                "a concatenation input that convolutions read too: requantized into the concatenation's scale; "
                f"depthwise convolutions' inputs: channels equalised ({len(equalised)} convolutions, "
                f"{flipped} always-negative leaky channels negated)"
                + (f"; {len(fixed)} layers' outputs: {ranges_from}" if fixed else ""),
                "input": "int8 (quantise x in [0, 1] with the input tensor's scale and zero point)",
                "output": "float32 (DEQUANTIZE appended by yolo4)",
                "calibration_images": int(len(calib) // options.batch * options.batch),
                "calibration_source": calib_source,
                "float32": "decoding" if options.outputs != "heads" else "nothing (full integer network)",
                "float_layers": [int(i) for i in options.int8_keep_float],
            }
        else:
            content = _convert_float(graph, x)
    except ExportError:
        raise
    except Exception as e:  # the converter's own errors: name the model and the stage
        raise ExportError(
            f"{spec.source}: litert-torch could not convert the network to TFLite "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    content = finish_flatbuffer(content, metadata(spec, names, options, quant))
    report: dict[str, Any] = {"path": path, "outputs": options.outputs, "quantization": quant or "none"}
    if options.check:
        gen = torch.Generator().manual_seed(1)
        diff = _compare(content, graph, torch.rand(options.batch, 3, *hw, generator=gen), path)
        report["max_abs_diff"] = diff
        if not options.int8 and diff > CHECK_ATOL:
            raise ExportError(
                f"{path}: the TFLite interpreter differs from PyTorch by {diff:.3g} "
                f"(relative to the output scale; allowed {CHECK_ATOL})"
            )
    part = path.with_name(path.name + ".part")
    part.write_bytes(content)
    os.replace(part, path)
    return report
