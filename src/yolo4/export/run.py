"""`yolo4 export`: load a model, validate everything, then write one exported file.

    result = run_export("yolov4-tiny", "best.weights", format="onnx", int8=True, calib="data/shapes")
    result = run_export("best.cfg", "best.weights", ExportOptions(format="tflite"))   # the same, as one object

Every check that can fail on bad input (unknown format, impossible option combinations,
missing weights, a network the runtime cannot express, calibration data without readable
images, an output path with the wrong suffix) runs before any file is written.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from yolo4.errors import ExportError
from yolo4.export.common import (
    SUFFIXES,
    ExportOptions,
    default_names,
    default_out,
    exported_spec,
    preprocess_record,
)


@dataclass
class ExportResult:
    """What `run_export` wrote: the files, and the exporter's report (check difference,
    opset, quantisation recipe)."""

    paths: list[Path]
    options: ExportOptions
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per file plus the check result."""
        lines = [f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)" for p in self.paths]
        o = self.options
        qat = not o.int8 and isinstance(self.report.get("quantization"), dict)  # a QAT model's own int8
        what = (
            f"{o.format}, outputs={o.outputs}, "
            + ("int8" if o.int8 else "int8 (quantisation-aware trained)" if qat else "float32")
            + (", dynamic batch" if o.dynamic_batch else f", batch {o.batch}")
        )
        lines.append(what)
        if "max_abs_diff" in self.report:
            lines.append(
                f"float32 check vs PyTorch on a fresh input: max difference {self.report['max_abs_diff']:.3g} "
                "(relative to the output scale)"
            )
        if "int8_max_abs_diff" in self.report and qat:
            lines.append(
                f"int8 vs the fake-quantised PyTorch model on a fresh input: max difference "
                f"{self.report['int8_max_abs_diff']:.3g} (relative to the output scale)"
            )
        elif "int8_max_abs_diff" in self.report:
            lines.append(
                f"int8 vs PyTorch float32 on random input: max difference "
                f"{self.report['int8_max_abs_diff']:.3g} (informative; accuracy: benchmarks/bench_export.py)"
            )
        if "int8_sqnr_db" in self.report:
            lines.append(
                f"int8 vs the fake-quantised model past that difference: SQNR {self.report['int8_sqnr_db']:.1f} dB "
                f"(the model against its float weights: {self.report['float_sqnr_db']:.1f} dB)"
            )
        if "sensitivity" in self.report:
            lines.append(self.report["sensitivity"].table(15))
        if "sensitivity_png" in self.report:
            lines.append(f"sensitivity plot: {self.report['sensitivity_png']}")
        if isinstance(self.report.get("quantization"), dict):
            q = self.report["quantization"]
            lines.append(
                f"int8 by {q.get('tool')}, calibrated on {q.get('calibration_images')} images from "
                f"{q.get('calibration_source')}"
            )
            if q.get("float_layers"):
                lines.append(f"layers kept float: {', '.join(str(i) for i in q['float_layers'])}")
        for note in self.report.get("notes", []):
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _load(
    model: str | os.PathLike,
    weights: str | os.PathLike | None,
    img_size: tuple[int, int] | None,
    num_classes: int | None,
):
    from yolo4.inference.runtime import is_exported
    from yolo4.models import load_model

    if is_exported(model):
        raise ExportError(f"{model} is already exported: export from the darknet model (--model CFG --weights W)")
    if weights is None:
        raise ExportError(
            "no --weights given: exporting an untrained network is pointless (train one with "
            "`yolo4 train`, or pass official darknet weights)"
        )
    return load_model(model, weights, num_classes=num_classes, img_size=img_size)


def _names(names: str | os.PathLike | list[str] | None, spec) -> list[str]:
    if names is None:
        return default_names(spec)
    if isinstance(names, (str, os.PathLike)):
        from yolo4.data.names import read_names

        table = read_names(names)
    else:
        table = [str(n) for n in names]
    classes = int(spec.yolo_layers[0].classes)
    if len(table) != classes:
        raise ExportError(
            f"{names if isinstance(names, (str, os.PathLike)) else 'names'}: {len(table)} class names "
            f"but the model has {classes} classes"
        )
    return table


def export_model(model, options: ExportOptions, out: str | os.PathLike, names: list[str] | None = None) -> ExportResult:
    """Export an already-built Darknet module (the library entry point; `run_export` loads one).

    Args:
        model: a `yolo4.darknet.Darknet` (not modified).
        options: see ExportOptions (validated here first).
        out: the output file (.onnx, .tflite, .xml for OpenVINO (+ .bin beside it) or .cfg for darknet
            (.weights beside it)).
        names: class names for the metadata (default COCO's for 80 classes, else numbers).
    Raises:
        ExportError (before anything is written) for bad options or calibration data.
    """
    options.validate()
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[options.format]:
        raise ExportError(f"{out}: --format {options.format} writes a {SUFFIXES[options.format]} file")
    names = list(names) if names is not None else default_names(model.spec)
    if options.format == "darknet":
        from yolo4.export.darknet import export_darknet, opencv_problems

        cfg, weights = export_darknet(model, out, options.img_size)
        report: dict[str, Any] = {"notes": [f"OpenCV DNN cannot load this: {p}" for p in opencv_problems(model)]}
        return ExportResult([cfg, weights], options, report)
    if options.format == "onnx":
        from yolo4.export.onnx import choose_opset
        from yolo4.inference.runtime import require_onnx

        require_onnx()
        choose_opset(model, options.opset)  # raises for a network the opset cannot express
        exporter_name = "onnx"
    elif options.format == "openvino":
        from yolo4.export.onnx import choose_opset
        from yolo4.inference.runtime import require_onnx, require_openvino

        require_onnx()
        require_openvino()
        choose_opset(model, options.opset)
        exporter_name = "openvino"
    else:
        from yolo4.export.tflite import _require_litert_torch

        _require_litert_torch()
        exporter_name = "tflite"
    calib, calib_source = None, ""
    mixed: dict[str, Any] = {}
    if options.int8:
        from yolo4.export.quantize import calibration_images

        spec = exported_spec(model, options.img_size)
        pre = preprocess_record(spec)
        if options.calib is None:  # ExportOptions checks this; narrows the type
            raise ExportError("--int8 needs calibration images: --calib DATASET_OR_IMAGE_FOLDER")
        calib, calib_source = calibration_images(
            options.calib, options.calib_count, tuple(pre["input_hw"]), pre["resize"], options.calib_split
        )
        options, mixed = _mixed_precision(model, options, calib, out)
    if exporter_name == "onnx":
        from yolo4.export.onnx import export_onnx

        report = export_onnx(model, out, options, names, calib, calib_source)
    elif exporter_name == "openvino":
        from yolo4.export.openvino import export_openvino

        report = export_openvino(model, out, options, names, calib, calib_source)
    else:
        from yolo4.export.tflite import export_tflite

        report = export_tflite(model, out, options, names, calib, calib_source)
    mixed_notes = mixed.pop("notes", [])
    report.update(mixed)
    notes = list(report.get("notes", [])) + mixed_notes
    if options.int8:
        from yolo4.export.graph import uses_mish

        if uses_mish(model):
            notes.append(
                "this network uses Mish, three int8 rounding points per activation (Softplus, Tanh, Mul) "
                "and no native NPU op; for int8 deployment train a leaky variant (e.g. yolov4-csp-leaky)"
            )
    report["notes"] = notes
    paths = [Path(report["path"])]
    if options.format == "openvino":
        paths.append(paths[0].with_suffix(".bin"))
    return ExportResult(paths, options, report)


def _mixed_precision(model, options: ExportOptions, calib, out: Path) -> tuple[ExportOptions, dict[str, Any]]:
    """The sensitivity analysis and the float layers that `options` asks for.

    Returns options with `int8_keep_float` completed (hand-named + chosen) and a report part:
    {"sensitivity": SensitivityReport, "sensitivity_png": Path, "notes": [...]} (empty when no
    analysis is asked for).
    """
    n_layers = len(model.spec.layers)
    bad = [i for i in options.int8_keep_float if i >= n_layers]
    if bad:
        raise ExportError(f"--int8-keep-float {bad}: the network has layers 0..{n_layers - 1}")
    if not options.analyse and options.int8_min_agreement is None:
        return options, {}
    from yolo4.export.sensitivity import analyse_layers, choose_float_layers

    part: dict[str, Any] = {"notes": []}
    analysis = analyse_layers(model, calib, progress=True)
    part["sensitivity"] = analysis
    if options.analyse:
        png = out.with_name(out.stem + ".sensitivity.png")
        png.parent.mkdir(parents=True, exist_ok=True)
        analysis.plot(png)
        part["sensitivity_png"] = png
    keep = set(options.int8_keep_float)
    if options.int8_min_agreement is not None:
        choice = choose_float_layers(model, calib, analysis, options.int8_min_agreement, options.int8_max_float)
        keep |= set(choice.keep_float)
        part["notes"].append(choice.summary())
    return dataclasses.replace(options, int8_keep_float=tuple(sorted(keep))), part


def run_export(
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    options: ExportOptions | None = None,
    *,
    names: str | os.PathLike | list[str] | None = None,
    num_classes: int | None = None,
    verbose: bool = True,
    **settings: Any,
) -> ExportResult:
    """`yolo4 export` (also `yolo4.export(...)`): load `model` (zoo name or .cfg; `num_classes`
    overrides the cfg's) with its darknet `weights`, export it, print a summary.

    Args:
        options: an ExportOptions; `settings` are ExportOptions fields by name (format, outputs,
            int8, calib, img_size, postprocess, out, ...) applied on top of it (or of the defaults).
        names: class names for the file's metadata (a list or a .names file).
    Returns:
        ExportResult: the files written and the exporter's report.

    The output defaults to `<weights folder>/<weights stem>[-HxW][-decoded|-nms][-int8].<ext>`.
    """
    known = [f.name for f in fields(ExportOptions)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ExportError(f"unknown export setting {', '.join(unknown)} (ExportOptions fields: {', '.join(known)})")
    if isinstance(settings.get("img_size"), int):
        settings["img_size"] = (settings["img_size"], settings["img_size"])
    options = replace(options or ExportOptions(), **settings)
    options.validate()
    net = _load(model, weights, options.img_size, num_classes)
    table = _names(names, net.spec)
    assert weights is not None  # _load refused None
    out = Path(options.out) if options.out else default_out(Path(weights).stem, options, Path(weights).parent)
    result = export_model(net, options, out, table)
    if verbose:
        print(result.summary())
    return result
