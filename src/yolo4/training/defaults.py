"""Defaults decided from the data: the `TrainConfig` fields left to `None` (or `anchors="auto"`)
get values that fit the dataset, the starting point and the machine, once, at the start of a
run; the resolved config is what the run saves (so `--resume` repeats it exactly), and each
choice is said on the run's first lines.

    cfg, notes = resolve_defaults(cfg, train_set, device)

What is decided, and why:

* warm-up (`burn_in` None): `warmup_epochs` epochs of optimizer steps, at most a fifth of the
  run, rising linearly (`burn_in_power` None: 1). darknet's `burn_in=1000` steps is COCO's
  (120k images); on 200 images at batch 16 it would be 80 epochs of warm-up. Its power-4
  curve keeps the lr under a tenth of its peak for the first 56% of the warm-up: a short run
  loses those steps (shapes, 6 epochs: mAP50 0.29 with power 4, 0.38 linear). A `burn_in`
  the user gives is kept, with darknet's power 4 unless `burn_in_power` is given. Both, and
  the EMA horizon below, follow the planned epochs: a time budget that re-plans the run early
  re-derives them (`replan_defaults`).
* anchors (`anchors="auto"`): the cfg's anchors are checked against the training boxes at the
  training size (`yolo4.training.anchors.check_anchors`) and replaced by k-means anchors (every
  mask used) when they fit badly, for heads trained anew only: heads loaded from darknet weights
  were trained with the cfg's anchors.
* more positives (`neighbor_cells` None): heads trained anew also train the two nearest
  neighbour cells of each truth, with `scale_x_y` 2 (unless given) so that those cells can
  reach the centre (Scaled-YOLOv4), and every anchor whose IoU with the truth exceeds 0.213
  (`iou_thresh`, yolov4.cfg's value; unless given); loaded heads keep darknet's one cell and
  the cfg's values, unless they decode with scale_x_y >= 2 (trained so: a fine-tune, `--qat`
  in particular, that trained them on one cell per truth would unlearn the neighbours).
* learning rate (`lr` None): LR (0.01 per 64 images), or under `--qat` QAT_LR (1e-5): with
  BatchNorm folded, nothing renormalises a channel after a step, and the model is already
  converged (kangaroo yolov4-tiny int8: 1e-5 kept its mAP50 in one epoch, 1e-4 lost 4-5 points).
* EMA horizon (`ema_decay` and `ema_tau` None): the average spans a tenth of the planned
  optimizer steps (decay 1 - 1/H, ramp H; at most YOLOv5's 0.9999 and 2000, meant for COCO's
  hundreds of thousands of steps). YOLOv5's values on a run of 300 steps would give the raw
  weights, and a short ramp to 0.9999 would freeze the average after a few epochs.
* loader processes (`workers` None): on CPU none when there are 4 cores or fewer (the training
  threads need them; decoded images are cached), else a quarter of the cores; on CUDA 8 at most.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from yolo4.training.config import TrainConfig

WARMUP_MAX_FRACTION = 0.2  # the warm-up takes at most this fraction of the planned steps
NEIGHBOR_SCALE_X_Y = 2.0  # scale_x_y that lets a cell predict a centre in its neighbour cells
MULTI_ANCHOR_IOU = 0.213  # iou_thresh of yolov4.cfg: every anchor this close to a truth trains on it
DARKNET_BURN_IN_POWER = 4.0  # darknet's warm-up curve (lr * (step / burn_in) ** 4), kept with a burn_in given
MIN_VAL_BOXES = 50  # fewer validation boxes than this: the run warns that its mAP is noisy
LR = 0.01  # lr per lr_batch images of a run that trains (from scratch, or from another data set's weights)
QAT_LR = 1e-5  # lr per lr_batch images of a --qat run: a tenth of where a default float run ends (LR x 0.01)
QAT_LR_WARN = 0.001  # --qat at this lr (per lr_batch images) or above: the run warns


def steps_per_epoch(num_images: int, batch: int) -> int:
    """Optimizer steps in one epoch of `num_images` at global batch `batch` (incomplete batches
    dropped, as the loop does)."""
    return max(1, num_images // max(batch, 1))


def warmup_steps(cfg: TrainConfig, epoch_steps: int, epochs: int | None = None) -> int:
    """Optimizer steps of warm-up: `burn_in` when given, else `warmup_epochs` epochs, at most
    WARMUP_MAX_FRACTION of the planned `epochs` (default cfg.epochs)."""
    if cfg.burn_in is not None:
        return int(cfg.burn_in)
    planned = cfg.epochs if epochs is None else epochs
    return max(0, round(min(cfg.warmup_epochs, WARMUP_MAX_FRACTION * planned) * epoch_steps))


def ema_horizon(epochs: int, epoch_steps: int) -> float:
    """The EMA's horizon in optimizer steps for a run of `epochs`: a tenth of its steps, 10 to 10,000."""
    return float(np.clip(round(0.1 * epochs * epoch_steps), 10, 10_000))


def planned_fields(cfg: TrainConfig) -> frozenset[str]:
    """The fields of a user's (unresolved) `cfg` that the defaults derive from the planned epoch
    count: warm-up and EMA horizon, unless given. A time budget that re-plans the run re-derives
    them (`replan_defaults`)."""
    fields = {"burn_in"} if cfg.burn_in is None else set()
    if cfg.ema_decay is None and cfg.ema_tau is None:
        fields |= {"ema_decay", "ema_tau"}
    return frozenset(fields)


def replan_defaults(cfg: TrainConfig, fields: frozenset[str], epochs: int, epoch_steps: int, step: int) -> dict:
    """New values of the plan-derived `fields` of a resolved `cfg` when the run is re-planned to
    `epochs` at optimizer step `step`: the EMA horizon follows the plan; the warm-up is re-derived
    only while it lasts, and never ends before `step` (the lr keeps rising, it does not jump back)."""
    changes: dict = {}
    if "burn_in" in fields and cfg.burn_in is not None and step < cfg.burn_in:
        changes["burn_in"] = max(step, warmup_steps(dataclasses.replace(cfg, burn_in=None), epoch_steps, epochs))
    if "ema_decay" in fields:
        horizon = ema_horizon(epochs, epoch_steps)
        changes["ema_decay"], changes["ema_tau"] = 1.0 - 1.0 / horizon, min(horizon, 2000.0)
    return {k: v for k, v in changes.items() if getattr(cfg, k) != v}


def heads_are_fresh(cfg: TrainConfig, spec, num_classes: int) -> bool:
    """Whether the [yolo] heads start from random weights: no weights, a backbone prefix that
    stops before the first head, or a class count other than the weights'."""
    if cfg.weights is None:
        return True
    if any(y.classes != num_classes for y in spec.yolo_layers):
        return True
    if cfg.weights_upto is not None:
        from yolo4.darknet.layers import YoloLayer

        first_head = min(i for i, layer in enumerate(spec.layers) if isinstance(layer, YoloLayer))
        return cfg.weights_upto < first_head  # layers 0..upto-1 load: the conv feeding the head is not among them
    return False


def trained_on_neighbours(cfg: TrainConfig, spec) -> bool:
    """Whether heads loaded from weights were trained on neighbour cells: they decode with
    scale_x_y >= NEIGHBOR_SCALE_X_Y (the cfg's, or the run's `scale_x_y`), as this project's
    runs with neighbour cells export them."""
    scales = [cfg.scale_x_y] if cfg.scale_x_y is not None else [y.scale_x_y for y in spec.yolo_layers]
    return all(s >= NEIGHBOR_SCALE_X_Y for s in scales)


def auto_workers(device: torch.device) -> int:
    """DataLoader processes: none on a CPU of 4 cores or fewer, else a quarter of the cores (at
    most 8); on CUDA min(8, cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cpu":
        return 0 if cores <= 4 else min(8, cores // 4)
    return min(8, cores)


def resolve_defaults(cfg: TrainConfig, train_set, device: torch.device) -> tuple[TrainConfig, list[str]]:
    """`cfg` with every automatic field decided (see the module docstring), and one note per
    decision for the run's log. Fields the user set are kept; a resolved config is returned
    unchanged (so resuming repeats the run).

    Args:
        train_set: the training DetectionDataset (labels and image sizes are read, no pixels).
    """
    from yolo4.models.zoo import resolve_spec
    from yolo4.training.anchors import check_anchors, train_box_sizes

    changes: dict = {}
    notes: list[str] = []
    epoch_steps = steps_per_epoch(len(train_set), cfg.batch)
    if cfg.burn_in_power is None:
        changes["burn_in_power"] = DARKNET_BURN_IN_POWER if cfg.burn_in is not None else 1.0
    if cfg.burn_in is None:
        changes["burn_in"] = warmup_steps(cfg, epoch_steps)
        power = changes.get("burn_in_power", cfg.burn_in_power)
        notes.append(
            f"warm-up {changes['burn_in']} steps (~{changes['burn_in'] / epoch_steps:.1f} epochs of {epoch_steps} steps, "
            + ("linear)" if power == 1 else f"power {power:g})")
        )
    spec = None
    if cfg.anchors == "auto" or cfg.neighbor_cells is None:
        spec = resolve_spec(cfg.model, img_size=cfg.img_size)
    fresh = heads_are_fresh(cfg, spec, len(train_set.names)) if spec is not None else True
    if cfg.anchors == "auto":
        if not fresh:
            changes["anchors"] = "cfg"
            notes.append("anchors: the cfg's (the heads come with the weights)")
        else:
            wh = train_box_sizes(train_set, cfg.img_size)
            report = check_anchors(spec, wh, cfg.img_size, cfg.seed)
            changes["anchors"] = "kmeans" if report.use_kmeans else "cfg"
            notes.append(report.summary())
    if cfg.neighbor_cells is None:
        assert spec is not None  # (resolved above for this)
        # loaded heads that decode with scale_x_y >= 2 were trained on neighbour cells (a centre
        # may lie in the next cell): training them on one cell per truth would unlearn that
        spread = fresh or trained_on_neighbours(cfg, spec)
        changes["neighbor_cells"] = spread
        if fresh and cfg.scale_x_y is None:
            changes["scale_x_y"] = NEIGHBOR_SCALE_X_Y
        if spread and cfg.iou_thresh is None and all(y.iou_thresh >= 1.0 for y in spec.yolo_layers):
            changes["iou_thresh"] = MULTI_ANCHOR_IOU
        notes.append(
            "positives: 3 cells per truth (neighbour cells, scale_x_y "
            f"{changes.get('scale_x_y', cfg.scale_x_y or spec.yolo_layers[0].scale_x_y)}), every anchor with IoU > "
            f"{changes.get('iou_thresh', cfg.iou_thresh if cfg.iou_thresh is not None else spec.yolo_layers[0].iou_thresh)}"
            + ("" if fresh else " (the loaded heads decode with scale_x_y >= 2: trained so)")
            if spread
            else "positives: darknet's one cell per truth (the heads come with the weights)"
        )
    if cfg.ema_decay is None and cfg.ema_tau is None:
        horizon = ema_horizon(cfg.epochs, epoch_steps)
        changes["ema_decay"], changes["ema_tau"] = 1.0 - 1.0 / horizon, min(horizon, 2000.0)
        if cfg.ema:
            notes.append(f"EMA over the last ~{horizon:g} steps (decay {changes['ema_decay']:.4f})")
    elif cfg.ema_decay is None or cfg.ema_tau is None:
        changes["ema_decay"] = 0.9999 if cfg.ema_decay is None else cfg.ema_decay
        changes["ema_tau"] = 2000.0 if cfg.ema_tau is None else cfg.ema_tau
    if cfg.lr is None:
        changes["lr"] = QAT_LR if cfg.qat else LR
        if cfg.qat:
            notes.append(
                f"lr {QAT_LR:g} per {cfg.lr_batch} images (--qat: BN folded, the converged model only fine-tuned; "
                "kangaroo yolov4-tiny lost 4-9 mAP50 points within 3 epochs at 1e-4)"
            )
    elif cfg.qat and cfg.lr >= QAT_LR_WARN:
        notes.append(
            f"warning: --qat at lr {cfg.lr:g} per {cfg.lr_batch} images: with BatchNorm folded, a float run's peak lr "
            f"wrecks a trained model; leave lr unset (--qat's default {QAT_LR:g}) or give about that"
        )
    if cfg.workers is None:
        changes["workers"] = auto_workers(device)
        notes.append(f"{changes['workers']} loader processes")
    return dataclasses.replace(cfg, **changes), notes


def split_note(train_set, val_set, data: str) -> str:
    """Where the run's train/val split comes from, its size, and a warning when the validation
    set has too few boxes for its mAP to mean much (fewer than MIN_VAL_BOXES)."""
    boxes = sum(len(val_set.labels(i)[0]) for i in range(len(val_set)))
    line = (
        f"split: {len(train_set)} train / {len(val_set)} val images ({boxes} val boxes) from "
        f"{getattr(train_set, 'split_origin', '') or data}"
    )
    if boxes < MIN_VAL_BOXES:
        line += (
            f"; warning: {boxes} validation boxes are too few to trust (one box moves mAP50 by "
            f"~{1 / max(boxes, 1):.0%}); compare runs on their curves, not one epoch"
        )
    return line


def close_mosaic_epochs(cfg: TrainConfig, epochs: int | None = None) -> int:
    """The last epochs trained without Mosaic/MixUp/CutMix: `close_mosaic`, or when None a fifth
    of the run's `epochs` (the planned count, which the time budget re-plans; default
    cfg.epochs), none for runs under 5 epochs; under `qat` every epoch (a quantisation-aware
    fine-tune continues where the float run ended: without Mosaic, which it closed last).

    A fifth, not a tenth: yolov4-tiny on kangaroo (97 epochs, 256 px) sat at mAP50 ~0.30 with
    Mosaic on and rose only once it stopped; closing the last 20 epochs gave 0.615 / 0.204 (mAP50 /
    mAP50-95) against 0.533 / 0.156 with the last 9 (README, "Real data against Ultralytics")."""
    epochs = cfg.epochs if epochs is None else epochs
    if cfg.close_mosaic is not None:
        return int(cfg.close_mosaic)
    if cfg.qat:
        return epochs
    return int(0.2 * epochs)
