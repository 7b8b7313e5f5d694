"""Defaults decided from the data: warm-up, anchors, positives, EMA horizon, workers, the split
line and its small-validation warning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from yolo4.models.zoo import build
from yolo4.training.config import TrainConfig
from yolo4.training.defaults import (
    LR,
    QAT_LR,
    auto_workers,
    close_mosaic_epochs,
    heads_are_fresh,
    planned_fields,
    replan_defaults,
    resolve_defaults,
    split_note,
    warmup_steps,
)


class _Set:
    """A training-set stand-in: `n` images of 320x320 with one large box each, one class."""

    def __init__(self, n: int, boxes_per_image: int = 1, split_origin: str = "ImageSets/Main/train.txt / val.txt"):
        self.n, self.k = n, boxes_per_image
        self.names = ["kangaroo"]
        self.image_hw = np.full((n, 2), 320)
        self.split_origin = split_origin
        rng = np.random.default_rng(0)
        self._wh = rng.uniform(120, 300, (n, 2))

    def __len__(self) -> int:
        return self.n

    def labels(self, i):
        w, h = self._wh[i]
        return np.tile(np.array([[0, 0, w, h]], np.float32), (self.k, 1)), np.zeros(self.k, np.int64)


def test_warmup_is_epochs_bounded_by_the_run_and_burn_in_wins():
    cfg, notes = resolve_defaults(TrainConfig(model="yolov4-tiny", epochs=100), _Set(160), torch.device("cpu"))
    assert (cfg.burn_in, cfg.burn_in_power) == (
        30,
        1.0,
    ) and "warm-up 30 steps (~3.0 epochs of 10 steps, linear)" in notes
    assert warmup_steps(TrainConfig(epochs=100), epoch_steps=8) == 24  # 3 epochs
    assert warmup_steps(TrainConfig(epochs=5), epoch_steps=8) == 8  # at most a fifth of 5 epochs
    assert warmup_steps(TrainConfig(epochs=100, burn_in=1000), epoch_steps=8) == 1000


def test_a_replan_rederives_the_warm_up_while_it_lasts_and_the_ema_horizon():
    user = TrainConfig(epochs=40)
    fields = planned_fields(user)
    assert fields == {"burn_in", "ema_decay", "ema_tau"}
    cfg = replace(user, burn_in=300, ema_decay=0.9975, ema_tau=400.0)  # resolved for 40 epochs of 100 steps
    # re-planned to 6 epochs at step 10: warm-up a fifth of 6 epochs, EMA over a tenth of 600 steps
    assert replan_defaults(cfg, fields, 6, 100, step=10) == {"burn_in": 120, "ema_decay": 1 - 1 / 60, "ema_tau": 60.0}
    assert replan_defaults(cfg, fields, 6, 100, step=200)["burn_in"] == 200  # never ends before now
    assert "burn_in" not in replan_defaults(cfg, fields, 6, 100, step=300)  # over: the lr does not jump back
    # what the user set stays
    given = planned_fields(TrainConfig(burn_in=1000, ema_decay=0.999))
    assert given == frozenset() and replan_defaults(cfg, given, 6, 100, step=10) == {}


def test_heads_are_fresh():
    spec = build("yolov4-tiny", num_classes=80)
    assert heads_are_fresh(TrainConfig(), spec, 1)
    assert heads_are_fresh(TrainConfig(weights="w.weights"), spec, 1)  # other class count: new heads
    assert not heads_are_fresh(TrainConfig(weights="w.weights"), spec, 80)
    assert heads_are_fresh(TrainConfig(weights="w.conv.29", weights_upto=29), spec, 80)
    assert not heads_are_fresh(TrainConfig(weights="w.weights", weights_upto=len(spec.layers)), spec, 80)


def test_resolve_defaults_from_scratch_on_large_boxes():
    cfg, notes = resolve_defaults(
        TrainConfig(model="yolov4-tiny", img_size=320, epochs=40), _Set(160), torch.device("cpu")
    )
    assert cfg.burn_in == 30 and cfg.anchors == "kmeans"  # 10 steps/epoch x 3; big boxes, COCO anchors fit badly
    assert cfg.neighbor_cells is True and cfg.scale_x_y == 2.0 and cfg.iou_thresh == 0.213
    assert cfg.ema_tau == 40.0 and cfg.ema_decay == pytest.approx(1 - 1 / 40)  # a tenth of 400 steps
    assert cfg.workers == auto_workers(torch.device("cpu"))
    text = "\n".join(notes)
    assert "warm-up 30 steps" in text and "-> k-means" in text and "neighbour cells" in text
    again, _ = resolve_defaults(cfg, _Set(160), torch.device("cpu"))
    assert again == cfg  # a resolved config (as a checkpoint holds it) stays as it is


def test_resolve_defaults_keeps_what_the_user_set_and_loaded_heads():
    user = TrainConfig(
        model="yolov4-tiny",
        burn_in=7,
        anchors="cfg",
        neighbor_cells=False,
        ema_decay=0.99,
        ema_tau=99.0,
        workers=3,
        lr=0.02,
    )
    cfg, notes = resolve_defaults(user, _Set(160), torch.device("cpu"))
    assert cfg == replace(user, burn_in_power=4.0) and notes == []  # a burn_in given: darknet's curve
    loaded = TrainConfig(model="yolov4-tiny", weights="yolov4-tiny.weights")  # 80 classes: heads come with it
    names80 = _Set(160)
    names80.names = [str(k) for k in range(80)]
    cfg, notes = resolve_defaults(loaded, names80, torch.device("cpu"))
    assert cfg.anchors == "cfg" and cfg.neighbor_cells is False and cfg.scale_x_y is None and cfg.iou_thresh is None
    assert "the heads come with the weights" in "\n".join(notes)


def test_split_note_warns_on_a_small_validation_set():
    small = split_note(_Set(100), _Set(20), "d")
    assert "100 train / 20 val images (20 val boxes) from ImageSets/Main/train.txt / val.txt" in small
    assert "warning" in small and "too few" in small
    assert "warning" not in split_note(_Set(100), _Set(20, boxes_per_image=3), "d")


@pytest.mark.parametrize(("given", "epochs", "expected"), [(None, 100, 20), (None, 4, 0), (None, 35, 7), (2, 100, 2)])
def test_close_mosaic_is_a_fifth_unless_given(given, epochs, expected):
    assert close_mosaic_epochs(TrainConfig(close_mosaic=given, epochs=epochs)) == expected


def test_qat_fine_tunes_without_mosaic_unless_told():
    assert close_mosaic_epochs(TrainConfig(qat=True, epochs=3)) == 3
    assert close_mosaic_epochs(TrainConfig(qat=True, epochs=3, close_mosaic=1)) == 1


def test_loaded_heads_decoding_with_scale_x_y_2_keep_training_on_neighbour_cells(tmp_path):
    """A model this project trained with neighbour cells exports scale_x_y=2: a fine-tune of it
    (`--qat` in particular) must train the same positives, or it unlearns them (mAP50 0.64 -> 0.03
    after one QAT epoch on kangaroo with darknet's one cell per truth)."""
    from dataclasses import replace

    from yolo4.darknet import format_cfg

    spec = build("yolov4-tiny", num_classes=1, img_size=320)
    spec.layers = [replace(layer, scale_x_y=2.0) if hasattr(layer, "scale_x_y") else layer for layer in spec.layers]
    (tmp_path / "best.cfg").write_text(format_cfg(spec))
    loaded = TrainConfig(model=str(tmp_path / "best.cfg"), weights="best.weights")
    cfg, notes = resolve_defaults(loaded, _Set(160), torch.device("cpu"))
    assert cfg.anchors == "cfg" and cfg.neighbor_cells is True and cfg.iou_thresh == 0.213
    assert cfg.scale_x_y is None  # the cfg's 2 decodes and trains
    assert "trained so" in "\n".join(notes)
    own = replace(loaded, iou_thresh=0.5, neighbor_cells=None)
    assert resolve_defaults(own, _Set(160), torch.device("cpu"))[0].iou_thresh == 0.5  # a given value wins


def test_the_lr_default_is_a_fine_tunes_under_qat_and_a_float_peak_lr_warns():
    qat = TrainConfig(model="yolov4-tiny", weights="best.weights", qat=True, anchors="cfg", neighbor_cells=False)
    cfg, notes = resolve_defaults(qat, _Set(160), torch.device("cpu"))
    assert cfg.lr == QAT_LR and not any("--qat at lr" in n for n in notes)
    assert any(f"lr {QAT_LR:g}" in n for n in notes)  # the choice is said
    assert resolve_defaults(replace(qat, qat=False), _Set(160), torch.device("cpu"))[0].lr == LR == 0.01
    cfg, notes = resolve_defaults(replace(qat, lr=0.01), _Set(160), torch.device("cpu"))
    assert cfg.lr == 0.01 and any("--qat at lr 0.01" in n for n in notes)  # a given lr is kept, and warned about
    _, notes = resolve_defaults(replace(qat, lr=0.0001), _Set(160), torch.device("cpu"))
    assert not any("--qat at lr" in n for n in notes)
