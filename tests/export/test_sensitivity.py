"""Per-layer int8 sensitivity (yolo4.export.sensitivity): the pure helpers against hand-computed
values, and the analysis finding a deliberately broken layer."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from yolo4.errors import ExportError
from yolo4.export.sensitivity import (
    analyse_layers,
    detection_agreement,
    fake_quant_weight,
    quant_params,
    quant_units,
    sqnr_db,
)


def test_sqnr_db_hand_values():
    ref = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert sqnr_db(ref, torch.tensor([1.0, 1.0, 1.0, 0.0])) == pytest.approx(10 * math.log10(4.0))
    assert sqnr_db(ref, ref.clone()) == math.inf
    assert sqnr_db(ref, 2 * ref) == pytest.approx(0.0)


def test_quant_params_hand_values():
    scale, zero = quant_params(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255)
    assert zero == -64  # round(-128 + 1 / (4 / 255)) = round(-64.25)
    # a range that excludes 0 is widened to include it (0 must be exact: zero padding)
    scale, zero = quant_params(2.0, 4.0)
    assert scale == pytest.approx(4.0 / 255) and zero == -128


def test_fake_quant_weight_per_channel():
    """Each output channel gets its own scale: a small channel is not crushed by a large one."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=gen)
    w[0] *= 1000.0
    q = fake_quant_weight(w)
    for f in range(4):
        step = w[f].abs().max() / 127
        assert (q[f] - w[f]).abs().max() <= step / 2 + 1e-6 * step
    assert q.shape == w.shape and not torch.equal(q, w)


def test_detection_agreement_brute_force():
    ref = [(torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30.0]]), torch.tensor([1, 2]))]
    same = [(torch.tensor([[0, 0, 10, 11], [20, 20, 30, 30.0]]), torch.tensor([1, 2]))]
    wrong_class = [(torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30.0]]), torch.tensor([1, 1]))]
    moved = [(torch.tensor([[5, 5, 15, 15], [20, 20, 30, 30.0]]), torch.tensor([1, 2]))]  # IoU 25/175
    empty = [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
    assert detection_agreement(ref, same) == 1.0
    assert detection_agreement(ref, wrong_class) == 0.5
    assert detection_agreement(ref, moved) == 0.5
    assert detection_agreement(ref, empty) == 0.0
    assert detection_agreement(empty, same) == 1.0


BROKEN = 26  # yolov4-tiny: a 3x3 conv (512 channels) read only by the 1x1 conv after it


def break_layer(model, i: int = BROKEN, channel: int = 5, k: float = 300.0):
    """The same function with an outlier channel: layer i's output channel `channel` is scaled
    by k (BN gamma and beta; leaky is positively homogeneous) and layer i+1's weights that read
    it by 1/k. Only a per-tensor int8 scale on layer i's output can tell."""
    m = copy.deepcopy(model)
    assert m.sources[i + 1] == () and all(i not in src for src in m.sources)
    with torch.no_grad():
        bn = m.blocks[i].bn
        bn.weight[channel] *= k
        bn.bias[channel] *= k
        m.blocks[i + 1].conv.weight[:, channel] /= k
    return m


def test_analysis_ranks_a_broken_layer_first(make_model, make_images):
    model = make_model("yolov4-tiny", img_size=96)
    broken = break_layer(model)
    x = make_images(6, (96, 96), seed=3)
    with torch.no_grad():
        for a, b in zip(model(x), broken(x)):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)  # the float function is unchanged
    normal = analyse_layers(model, x, max_images=4)
    report = analyse_layers(broken, x, max_images=4)
    assert normal.ranking()[0] != BROKEN
    assert report.ranking()[0] == BROKEN
    first = report.layers[0]
    assert first.sqnr_db < report.layers[1].sqnr_db - 3.0  # clearly first, not a tie
    before = next(r for r in normal.layers if r.index == BROKEN)
    assert first.act_range[1] > 50 * before.act_range[1]
    assert first.kind == "conv 3x3" and first.where == broken.spec.where(BROKEN)
    assert {r.index for r in report.layers} == set(quant_units(broken))
    assert "SQNR" in report.table(5)


def test_analysis_rejects_bad_calibration(make_model):
    with pytest.raises(ExportError, match="N, 3, H, W"):
        analyse_layers(make_model("yolov4-tiny", img_size=64), np.zeros((2, 64, 64), np.float32))
