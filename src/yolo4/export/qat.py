"""Quantisation-aware training (QAT) with NNCF: a trained Darknet turned into one that trains
with simulated int8, and back.

    qmodel = prepare_qat(model, calib)            # BN folded, NNCF FakeQuantize inserted and calibrated
    ... fine-tune qmodel with the normal training loop (`yolo4 train --qat`) ...
    config = qat_config(qmodel)                   # JSON-able: where the quantisers sit (goes in checkpoints)
    again = restore_qat(fresh_model, config)      # the same structure; then load_state_dict(...)
    export_model(qmodel, ExportOptions(format="onnx"), "model-qat-int8.onnx")   # QDQ, no calibration

The flow (NNCF's PyTorch QAT, chosen because its result exports to ONNX QDQ and OpenVINO IR
with the trained ranges, and because the model stays a `Darknet`, so the training loop, the
loss, EMA, validation and checkpoints need no second code path):

1. BatchNorm is folded into the convolutions first (the exported graphs fold it too), so the
   int8 weights that training sees are the ones that are deployed; the network's spec then
   has `batch_normalize=0` and conv biases, which darknet reads as well.
2. `nncf.quantize` on the torch module (MIXED preset: symmetric per-channel int8 weights,
   asymmetric per-tensor int8 activations, fast bias correction) inserts FakeQuantize
   modules whose ranges are calibrated on real images: the same recipe as the ONNX PTQ
   default, so QAT starts from the PTQ model and the fine-tuning only has to improve it.
   Activations are per tensor everywhere: NNCF's CPU setup would quantise a depthwise conv's
   input per channel, which OpenVINO runs but onnxruntime's QLinearConv refuses (one output
   zero point per tensor), so yolo-fastest's int8 ONNX did not load.
3. Training updates the weights (straight-through estimator) and the quantisers' ranges, unless
   `freeze_ranges` keeps them (`yolo4 train --qat --set qat_train_ranges=false`).
4. `torch.onnx.export` writes each FakeQuantize as QuantizeLinear/DequantizeLinear with
   the learned scales: an int8 QDQ graph that onnxruntime and OpenVINO run as int8 kernels.

NNCF's fake-quantise functions are used in their torch-native form, run eagerly (what NNCF
itself falls back to without a C++ compiler, without its torch.compile), so QAT needs no
extension build and no compilation at first use.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from yolo4.darknet import Darknet
from yolo4.darknet.layers import Conv, Convolutional
from yolo4.errors import ExportError
from yolo4.export.common import INT8_WEIGHT_BITS
from yolo4.export.quantize import nncf_ptq_options, quiet_nncf

QAT_RECIPE = {
    "tool": "NNCF quantisation-aware training (nncf.quantize on the PyTorch model, then fine-tuned)",
    "format": "QDQ",
    "weights": "int8 symmetric, per output channel (BatchNorm folded before training)",
    "activations": "int8 asymmetric, per tensor, ranges calibrated then trained",
    "float32": "decoding and NMS (everything outside the network)",
}
SEVEN_BITS = "; trained in 7 bits (-64..63) outside depthwise convolutions, which CPUs without VNNI do not saturate"
# onnxruntime's int8 kernels against the fake-quantised PyTorch model: both compute the same
# integer grid, but requantisation of a value that falls on a rounding boundary can differ by one
# step of the output scale, and such a step propagates; relative to max(1, |output|)
QAT_CHECK_ATOL = 0.05


def require_nncf_torch():
    """NNCF with its PyTorch backend, using the torch-native fake-quantise functions."""
    try:
        import nncf
        from nncf.torch.quantization.quantize_functions import QuantizedFunctionsCPU
        from nncf.torch.quantization.reference import torch_executor
    except ImportError as e:
        raise ExportError(
            f"quantisation-aware training needs NNCF (the 'openvino' extra): pip install 'yolo4[openvino]' ({e})"
        ) from None
    # NNCF compiles a C++ extension for these on first use (minutes, and a compiler), and its own
    # fallback wraps the reference functions in torch.compile (minutes again, recompiled per
    # input shape); the reference functions run eagerly compute the same thing, at once
    if getattr(QuantizedFunctionsCPU, "_loaded_namespace", None) is None:
        QuantizedFunctionsCPU._loaded_namespace = types.SimpleNamespace(
            Quantize_forward=torch_executor.forward, Quantize_backward=torch_executor.backward
        )
    return nncf


def is_qat(model: nn.Module) -> bool:
    """Whether `model` carries NNCF quantisers (a `prepare_qat` / `restore_qat` model)."""
    return hasattr(model, "__nncf_hooks")


def fold_batchnorm(model: Darknet) -> Darknet:
    """A new Darknet equal to `model` in eval mode, with every BatchNorm folded into its
    convolution (`W' = W * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma / sqrt(var + eps)`)
    and the spec saying so (`batch_normalize=0`: a conv with a bias). `model` is not changed."""
    spec = copy.deepcopy(model.spec)
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Convolutional) and layer.batch_normalize:
            spec.layers[i] = dataclasses.replace(layer, batch_normalize=0)
    out = Darknet(spec)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for src, dst in zip(model.blocks, out.blocks):
            if isinstance(src, Conv) and isinstance(dst, Conv) and isinstance(src.bn, nn.BatchNorm2d):
                dst.conv.load_state_dict(fuse_conv_bn_eval(src.conv, src.bn).state_dict())
            else:
                dst.load_state_dict(src.state_dict())
    model.train(was_training)
    return out.train(was_training)


def prepare_qat(model: Darknet, calib: torch.Tensor, batch: int = 8, weight_bits: int = 7) -> Darknet:
    """`model` (not changed) as a QAT network: BatchNorm folded, NNCF FakeQuantize on every
    conv's weights and on the activations, ranges calibrated on `calib`.

    Args:
        calib: float32 Tensor[N, 3, H, W] in [0, 1], prepared as `yolo4 detect` prepares images.
        weight_bits: 7: every convolution's weights but depthwise ones train and export in -64..63
            (NNCF's overflow fix, as the post-training export's default: CPUs without VNNI saturate
            on 8-bit weights); 8: the whole int8 range.
    Returns:
        a Darknet (in train mode) whose forward simulates int8; `qat_config` describes it.
    """
    nncf = require_nncf_torch()
    if len(calib) == 0:
        raise ExportError("quantisation-aware training needs calibration images (got none)")
    if weight_bits not in INT8_WEIGHT_BITS:
        raise ExportError(f"weight_bits={weight_bits}: QAT trains int8 weights in 7 or 8 bits")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    folded = fold_batchnorm(model).eval()
    items = [calib[i : i + batch] for i in range(0, len(calib), batch)]
    with quiet_nncf():
        quantised = nncf.quantize(
            folded,
            nncf.Dataset(items),
            **nncf_ptq_options(nncf, len(items)),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_quantization_params=QuantizationParameters(per_channel=False),
                overflow_fix=nncf.OverflowFix.ENABLE if weight_bits == 7 else nncf.OverflowFix.DISABLE,
            ),
        )
    if weight_bits == 7:
        _keep_seven_bits(quantised, calib[:1])
    return quantised.train()


def _keep_seven_bits(model: nn.Module, x: torch.Tensor) -> None:
    """Make the 7-bit weight quantisers of a freshly quantised `model` stay 7-bit in training (in place).

    NNCF's overflow fix calibrates a non-depthwise convolution's weights into half of an 8-bit
    quantiser (scale = 2 max|w|, levels -127..127: the weights on -63.5..63.5), which training may
    widen: its scale trains. A half-range quantiser (levels -64..63, exported as int8 with those
    values) cannot widen, and its 7-bit structure is in the quantiser's config, so checkpoints
    restore it. NNCF's grid step is kept, so only a channel's largest weight moves, when it is
    positive (63.5, rounded to 64, clips to 63). Kangaroo-trained yolo-fastest-1.1, heads' SQNR on
    its val images before training: 23.4 dB as NNCF calibrated it, 22.9 dB after this (8-bit
    weights: 22.9 dB); moving the biases to absorb the change made it worse (22.7 dB)."""
    with torch.no_grad():
        for q, conv in _weight_quantisers(model, x).items():
            if conv.groups > 1 and conv.groups == conv.in_channels:
                continue  # depthwise: NNCF's overflow fix leaves it 8-bit (its kernels do not saturate)
            step = (q.scale.detach().abs() + q.eps) / q.level_high
            q._qspec.narrow_range = q._narrow_range = False  # 2 x (-64..63) + (0, 1): the export's 256 levels
            q._qspec.half_range = q._half_range = True
            q.set_levels()
            q.scale = nn.Parameter(step * q.level_high - q.eps)


def _weight_quantisers(model: nn.Module, x: torch.Tensor) -> dict[Any, nn.Conv2d]:
    """{weight quantiser: the convolution whose weight it quantises} of QAT `model`, found by the
    tensor each quantiser is called on when `model` runs on `x` (Tensor[B, 3, H, W]), so that it
    depends on no NNCF naming scheme."""
    from nncf.torch.quantization.layers import SymmetricQuantizer

    convs = {m.weight.data_ptr(): m for m in model.modules() if isinstance(m, nn.Conv2d)}
    found: dict[Any, nn.Conv2d] = {}

    def note(module: nn.Module, args: Any) -> None:
        conv = convs.get(args[0].data_ptr()) if isinstance(args[0], torch.Tensor) else None
        if conv is not None:
            found[module] = conv

    handles = [m.register_forward_pre_hook(note) for m in model.modules() if isinstance(m, SymmetricQuantizer)]
    _run_with_hooks(model, x, handles)
    return found


def _run_with_hooks(model: nn.Module, x: torch.Tensor, handles: list) -> None:
    """`model` run once on `x` in eval mode without gradients, then its hooks (`handles`) removed
    and its train/eval mode restored, also when the forward fails."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def weight_bits(model: nn.Module) -> int:
    """7 when the convolutions of QAT `model` (but depthwise ones) train their weights in 7 bits
    (`prepare_qat(..., weight_bits=7)`), else 8."""
    require_nncf_torch()
    from nncf.torch.quantization.layers import BaseQuantizer

    return 7 if any(m.is_half_range for m in model.modules() if isinstance(m, BaseQuantizer)) else 8


def qat_recipe(model: nn.Module) -> dict[str, Any]:
    """The int8 recipe of QAT `model`'s exported files (the `yolo4.quantization` metadata): `QAT_RECIPE`
    with its weights' bit width (`weights_7bit`, which `yolo4.inference.runtime.int8_saturates` reads)."""
    seven = weight_bits(model) == 7
    return {**QAT_RECIPE, "weights": QAT_RECIPE["weights"] + (SEVEN_BITS if seven else ""), "weights_7bit": seven}


def freeze_ranges(model: nn.Module) -> None:
    """The quantisers of a QAT `model` keep their ranges (scales, input_low) in training: no
    gradients (in place; an optimiser built afterwards leaves them out). NNCF trains them by default."""
    require_nncf_torch()
    from nncf.torch.quantization.layers import BaseQuantizer

    for m in model.modules():
        if isinstance(m, BaseQuantizer):
            for p in m.parameters():
                p.requires_grad_(False)


def use_qdq_export(model: nn.Module) -> None:
    """Make the NNCF quantisers in `model` (in place) trace as ONNX QuantizeLinear/DequantizeLinear
    pairs, which every runtime reads (their default is OpenVINO's own FakeQuantize op)."""
    require_nncf_torch()
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    for m in model.modules():
        if isinstance(m, BaseQuantizer):
            m.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)


def qat_config(model: nn.Module) -> dict[str, Any]:
    """Where the quantisers of a QAT model sit (what `restore_qat` needs), as plain JSON values
    (NNCF's enums become their strings), so that checkpoints load with `weights_only=True`."""
    require_nncf_torch()
    from nncf.torch import get_config

    return json.loads(json.dumps(get_config(model)))


def restore_qat(model: Darknet, config: dict[str, Any]) -> Darknet:
    """A QAT network of the structure `config` describes, built on `model` (not changed; BN is
    folded as `prepare_qat` does). Its quantiser values are placeholders until a state dict of
    the QAT model is loaded into it."""
    require_nncf_torch()
    from nncf.torch import load_from_config

    folded = fold_batchnorm(model) if _has_bn(model) else copy.deepcopy(model)
    with quiet_nncf():
        return load_from_config(folded, config)


def learned_ranges(model: nn.Module, x: torch.Tensor) -> dict[int, tuple[float, float]]:
    """The activation ranges a QAT model's quantisers hold, by the Darknet block whose output each
    one quantises: {block index: (min, max)} (NNCF's `input_low`, `input_low + |input_range|`).

    A quantiser NNCF shares between the inputs of a concatenation appears under each block it
    quantises; the network input's quantiser (no block) is left out. Found by running `model`
    once on `x` (Tensor[B, 3, H, W]) and noting which block runs when each quantiser is called,
    so it depends on no NNCF naming scheme.
    """
    require_nncf_torch()
    from nncf.torch.quantization.layers import AsymmetricQuantizer

    current: list[int | None] = [None]
    found: dict[int, tuple[float, float]] = {}

    def enter(i: int):
        return lambda module, args: current.__setitem__(0, i)

    def record(module: nn.Module, args: Any, out: Any) -> None:
        q = cast(AsymmetricQuantizer, module)
        if current[0] is not None:
            lo = float(q.input_low.detach().flatten()[0])
            found[current[0]] = (lo, lo + float(q.input_range.detach().abs().flatten()[0]))

    blocks = cast(Darknet, model).blocks
    handles = [b.register_forward_pre_hook(enter(i)) for i, b in enumerate(blocks)]
    handles += [m.register_forward_hook(record) for m in model.modules() if isinstance(m, AsymmetricQuantizer)]
    _run_with_hooks(model, x, handles)
    return dict(sorted(found.items()))


def nncf_ranges(model: Darknet, calib: torch.Tensor, batch: int = 8) -> dict[int, tuple[float, float]]:
    """NNCF's post-training activation ranges of `model` (not changed), by the block whose output
    each quantises: {block index: (min, max)} (`prepare_qat`'s calibration on `calib`, float32
    Tensor[N, 3, H, W] in [0, 1], without training; then `learned_ranges`). The ONNX and
    OpenVINO int8 recipe's ranges, which TFLite's PT2E file takes over (`export_tflite`; its
    weights are 8-bit, so are these: the weights' bits do not move the activations' ranges)."""
    return learned_ranges(prepare_qat(model, calib, batch, weight_bits=8).eval(), calib[:1])


def float_network(model: Darknet) -> Darknet:
    """The plain (BN-folded) Darknet inside a QAT model, with its trained float weights and no
    quantisers: what `best.weights` holds after QAT, and what TFLite's own int8 quantiser starts from."""
    plain = Darknet(copy.deepcopy(model.spec))
    own = plain.state_dict()
    state = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ExportError(f"the QAT model has no tensor {missing[0]} (and {len(missing) - 1} more)")
    plain.load_state_dict({k: state[k] for k in own})
    return plain.eval()


def quantised_weights_network(model: Darknet) -> Darknet:
    """`float_network(model)` with every convolution's weights as QAT `model` computes with them
    (through their quantisers: on its int8 grid, in float32), in eval mode. What another int8
    quantiser (TFLite's PT2E) should start from: it rounds them again to its own 8-bit grid, which
    holds an 8-bit QAT grid exactly and a 7-bit one nearly (kangaroo yolo-fastest-1.1, 7-bit QAT,
    TFLite heads' SQNR 21.7 dB from these weights, 20.4 dB from the float ones; 8-bit QAT 21.7 both)."""
    plain = float_network(model)
    h, w = model.input_hw
    quantisers = _weight_quantisers(model, torch.zeros(1, 3, h, w))
    name_of = {id(m): n for n, m in model.named_modules()}
    convs = dict(plain.named_modules())
    with torch.no_grad():
        for q, conv in quantisers.items():
            convs[name_of[id(conv)]].weight.copy_(q(conv.weight))
    return plain


def _has_bn(model: Darknet) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
