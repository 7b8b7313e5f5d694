"""Which layers int8 hurts: per-layer sensitivity analysis and the float layers of mixed precision.

    analysis = analyse_layers(model, calib)            # calib float32 (N, 3, H, W) in [0, 1]
    print(analysis.table(10))                          # worst layers first
    keep = choose_float_layers(model, calib, analysis, min_agreement=0.95, max_float=8)

Method: the export's int8 recipe is simulated in PyTorch on a copy of the network with
BatchNorm folded into the convolutions (as every exported graph has it):

  * weights: symmetric int8, one scale per output channel (`torch.fake_quantize_per_channel_affine`);
  * activations: asymmetric int8, one scale per tensor, range = the 0.001st..99.999th
    percentile of the layer's output over the calibration images
    (`torch.fake_quantize_per_tensor_affine`).

A quantisable layer ("unit") is a [convolutional] (weights and output), a [shortcut] (its
sum) or a [route] that concatenates several tensors: the places where an int8 graph creates
a new scale. Max-pool, upsample and dropout pass scales through unchanged.

`analyse_layers` quantises one unit at a time, everything else float, and measures the SQNR
(signal-to-quantisation-noise ratio, dB) of the network's raw head outputs against float32.
Low SQNR = sensitive. It also reports each unit's
activation range and weight outlier ratio, which usually say why.

`choose_float_layers` keeps the most sensitive units in float, in ranked order, until the
simulated int8 network (everything else quantised) keeps `min_agreement` of float32's
detections on the calibration images (same class, IoU >= 0.5 at conf 0.25), or `max_float`
units are float.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from yolo4.darknet import Darknet
from yolo4.darknet.layers import Concat, Conv, Residual
from yolo4.errors import ExportError
from yolo4.export.graph import replace_inf_padding
from yolo4.inference.benchmark import fuse_conv_bn

PERCENTILE = 99.999  # activation range, as the ONNX recipe's default
SAMPLE_PER_BATCH = 200_000  # activation values kept per unit and batch for the percentile


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantisable layer: index in the cfg's layer list, where it is, and how much int8 hurts it.

    sqnr_db: output SQNR (dB) when only this layer is int8 (higher is better; inf = exact).
    act_range: (low, high) of its int8 output range. weight_outlier: max |w| / mean of the
    per-channel max |w| (1 for no outlier channel; only for convolutions, else nan).
    """

    index: int
    kind: str
    where: str
    sqnr_db: float
    act_range: tuple[float, float]
    weight_outlier: float


@dataclass(frozen=True)
class SensitivityReport:
    """Per-layer results, most sensitive first, plus the whole network's simulated int8 SQNR."""

    layers: tuple[LayerSensitivity, ...]
    full_sqnr_db: float
    images: int

    def ranking(self) -> list[int]:
        """Layer indices, most sensitive first."""
        return [r.index for r in self.layers]

    def table(self, top: int | None = None) -> str:
        """A text table of the `top` most sensitive layers."""
        rows = self.layers[:top] if top else self.layers
        lines = [
            f"int8 sensitivity, one layer quantised at a time ({self.images} calibration images); "
            f"all layers int8: output SQNR {self.full_sqnr_db:.1f} dB",
            f"{'rank':>4} {'layer':>5} {'kind':<14} {'SQNR dB':>8} {'act range':>20} {'w outlier':>9}  where",
        ]
        for k, r in enumerate(rows, 1):
            lo, hi = r.act_range
            wo = "" if math.isnan(r.weight_outlier) else f"{r.weight_outlier:.1f}"
            where = r.where.rsplit("/", 1)[-1]
            lines.append(
                f"{k:>4} {r.index:>5} {r.kind:<14} {r.sqnr_db:>8.1f} {f'[{lo:.3g}, {hi:.3g}]':>20} {wo:>9}  {where}"
            )
        return "\n".join(lines)

    def plot(self, path, top: int = 30) -> None:
        """Bar chart of the `top` most sensitive layers' SQNR (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.layers[:top]
        fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(rows) + 2), 3.6))
        values = [min(r.sqnr_db, 80.0) for r in rows]
        ax.bar([f"{r.index}\n{r.kind[:5]}" for r in rows], values, color="#d62728")
        ax.axhline(self.full_sqnr_db, color="#555", linestyle="--", label=f"all int8: {self.full_sqnr_db:.1f} dB")
        ax.set_ylabel("output SQNR (dB), this layer int8 alone")
        ax.set_title("int8 sensitivity by layer (lowest = most sensitive)", fontsize=10)
        ax.tick_params(axis="x", labelsize=6)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


# ------------------------------------------------------------------ pure helpers
def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    """10 log10(sum ref^2 / sum (ref - approx)^2) over all elements; inf when they are equal."""
    noise = float(((reference.double() - approx.double()) ** 2).sum())
    signal = float((reference.double() ** 2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def quant_params(low: float, high: float) -> tuple[float, int]:
    """Asymmetric int8 (-128..127) scale and zero point for the range [low, high] (0 always inside)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / 255.0
    zero = int(round(-128 - low / scale))
    return scale, max(-128, min(127, zero))


def fake_quant_weight(w: Tensor) -> Tensor:
    """Symmetric int8 fake quantisation per output channel. w: (F, C, kh, kw) -> same shape."""
    amax = w.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12)  # (F,)
    scale = (amax / 127.0).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -127, 127).to(w.dtype)


def weight_outlier_ratio(w: Tensor) -> float:
    """max |w| over mean of the per-output-channel max |w| (1 = no channel dominates)."""
    per_channel = w.detach().abs().flatten(1).amax(dim=1)
    return float(per_channel.max() / per_channel.mean().clamp_min(1e-12))


def detection_agreement(
    reference: Sequence[tuple[Tensor, Tensor]], candidate: Sequence[tuple[Tensor, Tensor]], iou: float = 0.5
) -> float:
    """Share of reference detections that the candidate reproduces (same class, box IoU >= iou).

    Each element is one image: (boxes (N, 4) xyxy, class_ids (N,)). Returns 1.0 when the
    reference has no detections.
    """
    from torchvision.ops import box_iou

    total = found = 0
    for (rb, rc), (cb, cc) in zip(reference, candidate):
        total += len(rb)
        if len(rb) == 0 or len(cb) == 0:
            continue
        match = (box_iou(rb.float(), cb.float()) >= iou) & (rc[:, None] == cc[None, :])  # (N, M)
        found += int(match.any(dim=1).sum())
    return 1.0 if total == 0 else found / total


# ------------------------------------------------------------------ the simulation
def quant_units(model: Darknet) -> list[int]:
    """Indices of the layers that get an int8 scale of their own (see the module docstring)."""
    out = []
    for i, block in enumerate(model.blocks):
        if isinstance(block, (Conv, Residual)) or (isinstance(block, Concat) and len(model.sources[i]) > 1):
            out.append(i)
    return out


def _kind(model: Darknet, i: int) -> str:
    block = model.blocks[i]
    if isinstance(block, Conv):
        conv = block.conv
        if conv.groups > 1 and conv.groups == conv.in_channels:
            return "conv dw"
        return f"conv {conv.kernel_size[0]}x{conv.kernel_size[1]}"
    return {Residual: "shortcut", Concat: "route"}.get(type(block), type(block).__name__)


class _Simulator:
    """A BN-folded copy of the network whose units can be switched to simulated int8."""

    def __init__(self, model: Darknet, calib: Tensor, batch: int = 8):
        """calib: (N, 3, H, W) images whose layer outputs set the activation ranges."""
        net = replace_inf_padding(fuse_conv_bn(copy.deepcopy(model).float().eval()))
        self.net = net
        self.units = quant_units(net)
        self.batch = batch
        self.float_weights = {
            i: cast(nn.Conv2d, net.blocks[i].conv).weight.detach().clone() for i in self.units if self._is_conv(i)
        }
        self.quant_weights = {i: fake_quant_weight(w) for i, w in self.float_weights.items()}
        self.ranges = self._calibrate(calib)
        self.active: set[int] = set()
        for i in self.units:
            net.blocks[i].register_forward_hook(self._hook(i))

    def _is_conv(self, i: int) -> bool:
        return isinstance(self.net.blocks[i], Conv)

    @torch.no_grad()
    def _calibrate(self, calib: Tensor) -> dict[int, tuple[float, float]]:
        samples: dict[int, list[Tensor]] = {i: [] for i in self.units}
        gen = torch.Generator().manual_seed(0)

        def grab(i):
            def hook(_m, _inp, out):
                flat = out.detach().flatten()
                if flat.numel() > SAMPLE_PER_BATCH:
                    flat = flat[torch.randint(0, flat.numel(), (SAMPLE_PER_BATCH,), generator=gen)]
                samples[i].append(flat.float())

            return hook

        handles = [self.net.blocks[i].register_forward_hook(grab(i)) for i in self.units]
        try:
            for x in calib.split(self.batch):
                self.net(x)
        finally:
            for h in handles:
                h.remove()
        q = torch.tensor([1 - PERCENTILE / 100, PERCENTILE / 100], dtype=torch.float64)
        out = {}
        for i, parts in samples.items():
            values = torch.cat(parts).double()
            lo, hi = torch.quantile(values, q).tolist()
            out[i] = (float(lo), float(hi))
        return out

    def _hook(self, i: int):
        def hook(_m, _inp, out: Tensor) -> Tensor | None:
            if i not in self.active:
                return None
            scale, zero = quant_params(*self.ranges[i])
            return torch.fake_quantize_per_tensor_affine(out, scale, zero, -128, 127)

        return hook

    def set_int8(self, units: set[int]) -> None:
        """Switch exactly `units` to simulated int8 (weights and output); the rest float."""
        self.active = set(units)
        for i in self.float_weights:
            w = self.quant_weights[i] if i in units else self.float_weights[i]
            cast(nn.Conv2d, self.net.blocks[i].conv).weight.data.copy_(w)

    @torch.no_grad()
    def heads(self, x: Tensor) -> list[Tensor]:
        """Every head output (B, A*(5+C), H_i, W_i) for x (B, 3, H, W), computed in batches."""
        parts = [self.net(chunk) for chunk in x.split(self.batch)]
        return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]

    @torch.no_grad()
    def detections(self, x: Tensor, conf: float = 0.25, iou: float = 0.45) -> list[tuple[Tensor, Tensor]]:
        """(boxes (N, 4) xyxy, class_ids (N,)) per image, one label per box, as `yolo4 detect`."""
        from yolo4.ops.boxes import decode_heads
        from yolo4.ops.nms import DETECT_POSTPROCESS, postprocess

        config = DETECT_POSTPROCESS.replace(conf=conf, iou=iou)
        out = []
        for chunk in x.split(self.batch):
            dec = decode_heads(self.net(chunk), self.net.yolo_layers, (int(x.shape[-2]), int(x.shape[-1])))
            for c in postprocess(dec.boxes, dec.objectness, dec.class_probs, config):
                out.append((c.boxes, c.class_ids))
        return out


def _as_tensor(calib: np.ndarray | Tensor, max_images: int | None) -> Tensor:
    x = torch.as_tensor(np.asarray(calib, dtype=np.float32)) if not isinstance(calib, Tensor) else calib.float()
    if x.ndim != 4 or x.shape[1] != 3:
        raise ExportError(f"calibration images must be (N, 3, H, W), got {tuple(x.shape)}")
    return x[:max_images] if max_images else x


def sqnr_of(outputs: Sequence[Tensor], reference: Sequence[Tensor]) -> float:
    """`sqnr_db` over several outputs (e.g. the heads) taken together: `outputs[i]` against `reference[i]`."""
    return sqnr_db(torch.cat([r.flatten() for r in reference]), torch.cat([o.flatten() for o in outputs]))


def analyse_layers(
    model: Darknet, calib: np.ndarray | Tensor, max_images: int | None = 16, progress: bool = False
) -> SensitivityReport:
    """Quantise one layer at a time (simulated int8, see the module docstring) and rank the layers.

    Args:
        model: a Darknet module (not modified).
        calib: float32 (N, 3, H, W) images in [0, 1], prepared as for calibration; all of them
            set the activation ranges.
        max_images: the SQNR is measured on the first `max_images` of them (one forward pass
            per quantisable layer each).
    Returns:
        SensitivityReport, layers sorted by increasing SQNR (most sensitive first).
    """
    sim = _Simulator(model, _as_tensor(calib, None))
    x = _as_tensor(calib, max_images)
    sim.set_int8(set())
    reference = sim.heads(x)
    units = sim.units
    it = units
    if progress:
        from tqdm import tqdm

        it = tqdm(units, desc="int8 sensitivity", unit="layer", leave=False)
    rows = []
    for i in it:
        sim.set_int8({i})
        block = sim.net.blocks[i]
        rows.append(
            LayerSensitivity(
                index=i,
                kind=_kind(sim.net, i),
                where=model.spec.where(i),
                sqnr_db=sqnr_of(sim.heads(x), reference),
                act_range=sim.ranges[i],
                weight_outlier=weight_outlier_ratio(sim.float_weights[i]) if isinstance(block, Conv) else math.nan,
            )
        )
    sim.set_int8(set(units))
    full = sqnr_of(sim.heads(x), reference)
    rows.sort(key=lambda r: r.sqnr_db)
    return SensitivityReport(tuple(rows), full, len(x))


@dataclass(frozen=True)
class FloatChoice:
    """The result of `choose_float_layers`: layers kept float and the simulated agreement after each step.

    steps: (number of float layers, share of float32's detections the simulated int8 keeps).
    """

    keep_float: tuple[int, ...]
    agreement: float
    steps: tuple[tuple[int, float], ...]

    def summary(self) -> str:
        trail = ", ".join(f"{k} float: {a:.3f}" for k, a in self.steps)
        kept = ", ".join(str(i) for i in self.keep_float) or "none"
        return f"layers kept float: {kept} (simulated share of float32 detections kept: {trail})"


def choose_float_layers(
    model: Darknet,
    calib: np.ndarray | Tensor,
    report: SensitivityReport,
    min_agreement: float = 0.95,
    max_float: int = 8,
    max_images: int | None = 32,
) -> FloatChoice:
    """Keep the most sensitive layers float, one at a time in ranked order, until the simulated
    int8 network keeps `min_agreement` of float32's detections (conf 0.25, IoU >= 0.5) on the
    calibration images, or `max_float` layers are float. See the module docstring."""
    if not 0.0 < min_agreement <= 1.0 or max_float < 0:
        raise ExportError(f"min_agreement must be in (0, 1] and max_float >= 0, got {min_agreement}, {max_float}")
    sim = _Simulator(model, _as_tensor(calib, None))
    x = _as_tensor(calib, max_images)
    sim.set_int8(set())
    reference = sim.detections(x)
    ranking = report.ranking()
    units = set(sim.units)
    steps = []
    keep: list[int] = []
    while True:
        sim.set_int8(units - set(keep))
        agreement = detection_agreement(reference, sim.detections(x))
        steps.append((len(keep), agreement))
        if agreement >= min_agreement or len(keep) >= min(max_float, len(ranking)):
            break
        keep.append(ranking[len(keep)])
    return FloatChoice(tuple(keep), agreement, tuple(steps))
