"""`yolo4 train --qat`: quantisation-aware fine-tuning of a trained model in the normal loop.

    yolo4 train --data DATA --model best.cfg --weights best.weights --qat --epochs 1
    yolo4.train("DATA", weights="runs/train/best.pt", qat=True, epochs=1)

The learning rate defaults to `QAT_LR` (1e-5 per 64 images, `yolo4.training.defaults`), a tenth
of where a default float run ends: with BatchNorm folded nothing renormalises a channel after a
step, and the model is already converged (kangaroo yolov4-tiny, one epoch: 1e-5 kept mAP50,
1e-4 lost 4 points). The positives are the ones the heads were trained with (`neighbor_cells`
None: heads that decode with scale_x_y >= 2 train on neighbour cells); a fine-tune on other
positives unlearns them (kangaroo yolov4-tiny: mAP50 0.64 -> 0.03 in one epoch).

What changes against a normal run (everything else, the loop, the hooks, validation and
checkpoints, is the same):
  * setup: the loaded network becomes a QAT network (`yolo4.export.qat.prepare_qat`: BN folded,
    NNCF FakeQuantize calibrated on `qat_calib_images` training images, prepared as `yolo4
    detect` prepares them); a resumed run rebuilds the same structure from its checkpoint;
  * the weights and the quantisers' ranges train together (NNCF's QAT; `qat_train_ranges=false`
    keeps the calibrated ranges: on kangaroo yolov4-tiny the two were within the validation's
    noise of each other), the weights of every convolution but depthwise ones in 7 bits
    (`qat_weight_bits`, as `yolo4 export --int8` writes them: CPUs without VNNI saturate on 8);
  * mixed precision is off (the simulated int8 must be the deployed int8);
  * each epoch's validation evaluates the fake-quantised model (its EMA), so val/mAP50 is the
    int8 model's accuracy, and so does one before the first step (epoch 0: the calibrated model,
    i.e. post-training quantisation), so that best.pt is never worse than where QAT started;
  * at the end `QatExportHook` writes best.pt's int8 model in the `qat_export` formats, and
    best.cfg + best.weights with its float weights (BN folded).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from yolo4.darknet import Darknet
from yolo4.errors import ExportError, Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.training.hooks import Hook, say
from yolo4.training.state import TrainState, val_size

QAT_FORMATS = ("onnx", "openvino", "tflite")


def qat_formats(cfg: TrainConfig) -> list[str]:
    """The formats of cfg.qat_export, checked."""
    formats = [f.strip() for f in cfg.qat_export.split(",") if f.strip()]
    bad = [f for f in formats if f not in QAT_FORMATS]
    if bad:
        raise Yolo4Error(
            f"qat_export={cfg.qat_export!r}: unknown format {bad[0]} (choose from {', '.join(QAT_FORMATS)})"
        )
    return formats


def check_qat_config(cfg: TrainConfig) -> None:
    """Yolo4Error for a QAT run that cannot work, naming the setting (before anything is loaded)."""
    if not cfg.resume and not cfg.weights:
        raise Yolo4Error(
            "--qat fine-tunes a trained model with simulated int8: give its weights (--weights best.weights "
            "with --model best.cfg, or a run's best.pt); quantising an untrained network is pointless"
        )
    if cfg.weights and not Path(cfg.weights).is_file():
        raise Yolo4Error(f"{cfg.weights}: weights file not found (--qat needs the trained model)")
    if cfg.weights_upto is not None:
        raise Yolo4Error("--qat needs the whole trained model: drop --weights-upto (a backbone prefix has no heads)")
    if cfg.anchors == "kmeans":
        raise Yolo4Error("--qat keeps the trained model's anchors: anchors=kmeans would change what its heads predict")
    if cfg.cmbn:
        raise Yolo4Error("--qat folds BatchNorm into the convolutions (as deployed): cmbn cannot be used with it")
    if cfg.qat_calib_images < 1:
        raise Yolo4Error(f"qat_calib_images={cfg.qat_calib_images}: at least one image calibrates the int8 ranges")
    if cfg.qat_weight_bits not in (7, 8):
        raise Yolo4Error(
            f"qat_weight_bits={cfg.qat_weight_bits}: int8 weights train in 7 bits (the default: CPUs without "
            "VNNI run them without saturating) or 8"
        )
    qat_formats(cfg)


def checkpoint_as_darknet(cfg: TrainConfig) -> TrainConfig:
    """A QAT run starting from a yolo4 checkpoint (`weights=.../best.pt`): its network (EMA weights
    when it has them) written as darknet `<out>/qat_start.cfg` + `.weights`, and `cfg` pointing at
    them (model, weights), so that the rest of the run and its resume treat it as any trained model."""
    from yolo4.export.darknet import export_darknet
    from yolo4.training.checkpoint import load_checkpoint, trained_network

    path = Path(str(cfg.weights))
    ckpt = load_checkpoint(path)
    if ckpt.get("qat"):
        raise Yolo4Error(f"{path}: this checkpoint is already a QAT model; start QAT from the float model's best.pt")
    net = trained_network(path, ckpt)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ckpt.get("names")
    if names:
        (out / "qat_start.names").write_text("\n".join(names) + "\n")
    cfg_path, weights_path = export_darknet(net, out / "qat_start.cfg")
    new = copy.copy(cfg)
    new.model, new.weights = str(cfg_path), str(weights_path)
    return new


def qat_model(model: torch.nn.Module, cfg: TrainConfig, resumed: dict[str, Any] | None, fresh_head: bool):
    """The QAT network for a run: `model` (the loaded trained Darknet) with BN folded and
    calibrated NNCF quantisers; when resuming, the checkpoint's quantiser structure (its values
    are loaded with the rest of the state). With `cfg.qat_train_ranges` off, the quantisers' ranges
    are frozen (no gradients: the optimiser leaves them out) and only the weights train."""
    from yolo4.export.qat import freeze_ranges, prepare_qat, restore_qat

    if resumed is not None:
        if not resumed.get("qat"):
            raise Yolo4Error("--resume: this run's checkpoint holds no QAT model (was it trained with --qat?)")
        qmodel = restore_qat(model, resumed["qat"]).train()  # type: ignore[arg-type]
    elif fresh_head:
        raise Yolo4Error(
            f"--qat: the weights {cfg.weights} do not hold this dataset's heads (another class count?): QAT "
            "fine-tunes a model trained on the same classes; train one first"
        )
    else:
        qmodel = prepare_qat(model, _calibration(cfg, model), weight_bits=cfg.qat_weight_bits)  # type: ignore[arg-type]
    if not cfg.qat_train_ranges:
        freeze_ranges(qmodel)
    return qmodel


def _calibration(cfg: TrainConfig, net) -> torch.Tensor:
    from yolo4.export.common import exported_spec, preprocess_record
    from yolo4.export.quantize import calibration_images

    size = val_size(cfg)
    pre = preprocess_record(exported_spec(net, (size, size)))
    images, _ = calibration_images(cfg.data, cfg.qat_calib_images, (size, size), pre["resize"], "train")
    return torch.from_numpy(images)


def load_qat_checkpoint(path: Path, base: Darknet) -> Darknet:
    """A QAT run's checkpoint (best.pt / last.pt) as the fake-quantised Darknet it validated: `base`
    (the run's BN-folded network, not changed) restored to its quantiser layout, with the
    checkpoint's EMA weights (its raw weights without EMA), in eval mode."""
    from yolo4.export.qat import restore_qat
    from yolo4.training.checkpoint import load_checkpoint, load_model_state, network_state

    ckpt = load_checkpoint(path)
    qmodel = restore_qat(base, ckpt["qat"])
    load_model_state(qmodel, network_state(ckpt), path)
    return qmodel.eval()


class QatExportHook(Hook):
    """At the end (main process): best.pt's QAT model exported as int8 files (`cfg.qat_export`:
    `best-int8.onnx`, `best-int8.xml`, `best-int8.tflite`), and its float weights (BN folded) as
    darknet best.cfg + best.weights (state.best_files). TFLite's file is litert-torch's PT2E
    int8 of the QAT-trained weights as QAT quantised them (`quantised_weights_network`: PT2E
    rounds them to its 8-bit grid) with the activation ranges QAT learned (`learned_ranges`:
    each layer output NNCF quantised keeps its trained range; the tensors only TFLite quantises,
    a convolution's output before its leaky ReLU and the heads, are calibrated) and their biases
    as trained (no second bias correction)."""

    def on_end(self, state: TrainState) -> None:
        best = state.out_dir / "best.pt"
        if not state.dist.is_main or not best.exists():
            return
        from yolo4.export import ExportOptions, export_model
        from yolo4.export.darknet import export_darknet
        from yolo4.export.qat import float_network, learned_ranges, quantised_weights_network

        qmodel = load_qat_checkpoint(best, float_network(state.net))
        size = val_size(state.cfg)
        (state.out_dir / "names.txt").write_text("\n".join(state.names) + "\n")
        plain = float_network(qmodel)
        state.best_files = export_darknet(plain, state.out_dir / "best.cfg", img_size=(size, size))
        say(state, f"best QAT model's float weights (BN folded) exported to {state.best_files[0]} + .weights")
        failed: list[str] = []
        for fmt in qat_formats(state.cfg):
            out = state.out_dir / f"best-int8{ {'onnx': '.onnx', 'openvino': '.xml', 'tflite': '.tflite'}[fmt] }"
            try:
                if fmt == "tflite":  # the trained weights and ranges, in TFLite's own PT2E quantiser
                    ranges = learned_ranges(qmodel, torch.zeros(1, 3, size, size))
                    options = ExportOptions(
                        format="tflite", img_size=(size, size), int8=True, calib=state.cfg.data, calib_count=100,
                        int8_ranges=tuple((i, lo, hi) for i, (lo, hi) in ranges.items()),
                        int8_bias_correction=False,  # NNCF corrected them; training kept them right for int8
                    )  # fmt: skip
                    result = export_model(quantised_weights_network(qmodel), options, out, names=state.names)
                else:
                    options = ExportOptions(format=fmt, img_size=(size, size))
                    result = export_model(qmodel, options, out, names=state.names)
            except Exception as e:  # one format's failure keeps the run and the other formats
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                failed.append(f"{out}: {reason[-400:]}")
                say(state, f"int8 {fmt} of best.pt's QAT model failed: {failed[-1]}")
                continue
            r = result.report
            notes = [f"max difference {r['int8_max_abs_diff']:.3g}"] if "int8_max_abs_diff" in r else []
            if "int8_sqnr_db" in r:  # past QAT_CHECK_ATOL: passed on SQNR (export.onnx.check_qat_file)
                notes.append(
                    f"SQNR {r['int8_sqnr_db']:.1f} dB against it, its float weights {r['float_sqnr_db']:.1f} dB"
                )
            check = f" (vs the fake-quantised PyTorch model: {'; '.join(notes)})" if notes else ""
            say(state, f"int8 {fmt} of best.pt's QAT model: {result.paths[0]}{check}")
        if failed:
            raise ExportError(
                "the QAT run finished and kept best.pt, best.cfg and best.weights, but its int8 export failed: "
                + "; ".join(failed)
            )
