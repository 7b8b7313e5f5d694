"""ONNX export: raw heads, decoded boxes/scores, or NMS inside the graph; static or dynamic batch.

    path = export_onnx(model, "yolov4-tiny.onnx", ExportOptions(outputs="decoded"), names)

The network is traced with PyTorch's TorchScript-based exporter (`dynamo=False`: the
dynamo exporter needs the extra `onnxscript` package and gives the same graph here).
Opset 17 by default, 18 when the network uses Mish. PyTorch writes Mish as
Softplus -> Tanh -> Mul, which every ONNX runtime runs.

Graph inputs and outputs:

    images        float32 (B, 3, H, W) in [0, 1], RGB (B symbolic with dynamic_batch)
    heads:        head0, head1, ...: (B, A*(5+C), H_i, W_i), the tensors darknet's [yolo] layers get
    decoded:      boxes (B, N, 4) xyxy input pixels, scores (B, N, C) = objectness * class prob.
    nms:          batch_index (K,) int64, boxes (K, 4) xyxy input pixels, scores (K,),
                  class_ids (K,) int64, grouped by image, then class, by decreasing score;
                  K varies. ONNX NonMaxSuppression keeps scores > conf and suppresses
                  IoU > iou within a class, at most max_det boxes per class and image.

After export the file is run in onnxruntime on a second random input (a different seed and,
with a dynamic batch, a different batch size than the export input) and compared with
PyTorch; a mismatch raises ExportError.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolo4.darknet import Darknet
from yolo4.errors import ExportError
from yolo4.export.common import ExportOptions, exported_spec, input_hw, metadata
from yolo4.export.graph import build_graph, uses_mish
from yolo4.inference.runtime import onnx_session, require_onnx

INPUT_NAME = "images"
NMS_OUTPUTS = ("batch_index", "boxes", "scores", "class_ids")
CHECK_ATOL = 1e-4  # float32 ONNX vs PyTorch, relative to max(1, |reference|)


def choose_opset(model: nn.Module, requested: int | None) -> int:
    """17, or 18 when the network has Mish; a requested opset below that raises ExportError."""
    needed = 18 if uses_mish(model) else 17
    if requested is None:
        return needed
    if requested < needed:
        raise ExportError(
            f"opset {requested} cannot express this network: it uses Mish, which needs opset >= 18 "
            "(or retrain with leaky activations)"
        )
    return requested


def output_names(model: Darknet, outputs: str) -> list[str]:
    """The graph's output names for `outputs` ("heads", "decoded" or "nms")."""
    if outputs == "heads":
        return [f"head{i}" for i in range(len(model.yolo_layers))]
    if outputs == "decoded":
        return ["boxes", "scores"]
    return list(NMS_OUTPUTS)


def _trace_names(model: Darknet, outputs: str) -> list[str]:
    return ["boxes_all", "scores_all"] if outputs == "nms" else output_names(model, outputs)


def _export_graph(
    graph: nn.Module, x: torch.Tensor, path: Path, names: list[str], opset: int, dynamic_batch: bool
) -> None:
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-folding notes of the TorchScript exporter
        torch.onnx.export(
            graph,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def append_nms(model_proto: Any, conf: float, iou: float, max_det: int) -> Any:
    """Append ONNX NonMaxSuppression to a graph whose outputs are boxes_all (B, N, 4) and
    scores_all (B, C, N); the new outputs are NMS_OUTPUTS. Returns a new ModelProto."""
    onnx, _ = require_onnx()
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model_proto)
    g = m.graph
    consts = {
        "nms_max_per_class": helper.make_tensor("nms_max_per_class", TensorProto.INT64, [1], [int(max_det)]),
        "nms_iou": helper.make_tensor("nms_iou", TensorProto.FLOAT, [1], [float(iou)]),
        "nms_conf": helper.make_tensor("nms_conf", TensorProto.FLOAT, [1], [float(conf)]),
        "nms_col0": helper.make_tensor("nms_col0", TensorProto.INT64, [], [0]),
        "nms_col1": helper.make_tensor("nms_col1", TensorProto.INT64, [], [1]),
        "nms_col02": helper.make_tensor("nms_col02", TensorProto.INT64, [2], [0, 2]),
    }
    g.initializer.extend(consts.values())
    g.node.extend(
        [
            helper.make_node(
                "NonMaxSuppression",
                ["boxes_all", "scores_all", "nms_max_per_class", "nms_iou", "nms_conf"],
                ["nms_selected"],
                name="/nms/NonMaxSuppression",
                center_point_box=0,
            ),  # (K, 3) b, c, n
            helper.make_node("Gather", ["nms_selected", "nms_col0"], ["batch_index"], name="/nms/batch", axis=1),
            helper.make_node("Gather", ["nms_selected", "nms_col1"], ["class_ids"], name="/nms/class", axis=1),
            helper.make_node("Gather", ["nms_selected", "nms_col02"], ["nms_bn"], name="/nms/bn", axis=1),  # (K, 2)
            helper.make_node("GatherND", ["boxes_all", "nms_bn"], ["boxes"], name="/nms/boxes"),  # (K, 4)
            helper.make_node("GatherND", ["scores_all", "nms_selected"], ["scores"], name="/nms/scores"),  # (K,)
        ]
    )
    del g.output[:]
    g.output.extend(
        [
            helper.make_tensor_value_info("batch_index", TensorProto.INT64, ["K"]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"]),
            helper.make_tensor_value_info("class_ids", TensorProto.INT64, ["K"]),
        ]
    )
    onnx.checker.check_model(m)
    return m


def inline_shared_initializers(model_proto: Any) -> None:
    """Replace `Identity(initializer)` nodes by a copy of the initializer under the output's
    name (in place). The TorchScript exporter deduplicates equal tensors (e.g. equal conv
    biases) that way, and onnxruntime's quantiser only quantises weights and biases that are
    initializers."""
    g = model_proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = type(inits[node.input[0]])()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            g.initializer.append(copy)
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)


def set_metadata(model_proto: Any, meta: dict[str, str]) -> None:
    """Replace the model's metadata_props with `meta` (in place on the proto)."""
    del model_proto.metadata_props[:]
    for k, v in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = k, v


def compare_with_torch(path: str | os.PathLike, graph: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between the ONNX file's outputs and `graph(x)`'s, scaled by
    max(1, max |reference|) per output."""
    return _max_rel_diff(*_outputs(path, graph, x))


def _max_rel_diff(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Max over outputs of max |got - ref| / max(1, max |ref|)."""
    return max(
        (float(np.abs(g - r).max(initial=0.0)) / max(1.0, float(np.abs(r).max(initial=0.0))) for g, r in zip(got, ref)),
        default=0.0,
    )


def _outputs(path: str | os.PathLike, graph: nn.Module, x: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the ONNX file's outputs, `graph(x)`'s) for x (B, 3, H, W), checked to match in count and shape."""
    sess = onnx_session(path)
    got = sess.run(None, {INPUT_NAME: x.numpy()})
    ref = _torch_outputs(graph, x)
    if len(got) != len(ref):
        raise ExportError(f"{path}: {len(got)} outputs but PyTorch gives {len(ref)}")
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            raise ExportError(f"{path}: output shape {g.shape} differs from PyTorch's {r.shape}")
    return got, ref


def _torch_outputs(graph: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = graph(x)
    return [r.numpy() for r in (out if isinstance(out, (list, tuple)) else [out])]


def check_qat_file(
    path: Path, model: Darknet, graph: nn.Module, x: torch.Tensor, options: ExportOptions, report: dict[str, Any]
) -> None:
    """A QAT model's QDQ file (onnxruntime, int8 kernels) against its fake-quantised PyTorch `graph`
    (`build_graph` of `model` for options.outputs) on x (B, 3, H, W); fills report["int8_max_abs_diff"]
    (and the two SQNRs when they decide) and raises ExportError when they disagree.

    Both compute the same integer grid, but a value within float rounding of a quantisation
    boundary can land one step apart, and in a deep network such one-step flips accumulate
    (yolo-fastest's 60 depthwise-separable blocks: 1e-5 of block 0's outputs differ by one step,
    the heads by up to 0.09 of their scale). The file passes when the largest difference is within
    QAT_CHECK_ATOL of the output scale, or else when its outputs are closer to the fake-quantised
    model's than that model's are to its own float weights (SQNR, dB): the file then departs from
    the trained int8 model by less than int8 itself departs from float. A wrong scale or a missing
    quantiser fails both.
    """
    from yolo4.export.qat import QAT_CHECK_ATOL, float_network
    from yolo4.export.sensitivity import sqnr_of

    got, ref = _outputs(path, graph, x)
    diff = report["int8_max_abs_diff"] = _max_rel_diff(got, ref)
    if diff <= QAT_CHECK_ATOL:
        return
    hw = (x.shape[2], x.shape[3])
    float_graph = build_graph(float_network(model), options.outputs, hw, options.postprocess.labels)
    tensors = [[torch.from_numpy(a) for a in arrays] for arrays in (ref, got, _torch_outputs(float_graph, x))]
    file_db, float_db = sqnr_of(tensors[1], tensors[0]), sqnr_of(tensors[2], tensors[0])
    report["int8_sqnr_db"], report["float_sqnr_db"] = file_db, float_db
    if file_db < float_db:
        raise ExportError(
            f"{path}: onnxruntime's int8 output differs from the fake-quantised PyTorch model by {diff:.3g} "
            f"(relative to the output scale; allowed {QAT_CHECK_ATOL}), and its SQNR against that model, "
            f"{file_db:.1f} dB, is below the model's own against its float weights ({float_db:.1f} dB)"
        )


def check_input(options: ExportOptions, hw: tuple[int, int]) -> torch.Tensor:
    """The check input: seed 1 (the export input uses seed 0); batch + 1 with a dynamic batch."""
    gen = torch.Generator().manual_seed(1)
    batch = options.batch + 1 if options.dynamic_batch else options.batch
    return torch.rand(batch, 3, *hw, generator=gen)


def export_onnx(
    model: Darknet,
    path: str | os.PathLike,
    options: ExportOptions,
    names: list[str],
    calib: np.ndarray | None = None,
    calib_source: str = "",
) -> dict[str, Any]:
    """Export `model` to ONNX at `path` (float32, or int8 QDQ when options.int8).

    Args:
        model: a Darknet module (not modified; it is put in eval mode).
        options: format must be "onnx" (see ExportOptions).
        names: class names, stored in the metadata.
        calib: float32 (N, 3, H, W) calibration images in [0, 1], required with options.int8.
    Returns:
        a report: {"path", "opset", "outputs", "max_abs_diff" (fp32 check, relative to
        max(1, |ref|)), "quantization" (int8 recipe or "none")}.
    Raises:
        ExportError before writing anything for options ONNX cannot honour; after export,
        when onnxruntime disagrees with PyTorch.
    """
    onnx, _ = require_onnx()
    options.validate()
    if options.format != "onnx":
        raise ExportError(f"export_onnx got format '{options.format}'")
    from yolo4.export.qat import is_qat, qat_recipe

    qat = is_qat(model)  # trained with simulated int8: its quantisers export as QDQ, no calibration
    if qat and options.int8:
        raise ExportError("this model is already int8 (quantisation-aware trained): export it without --int8")
    if options.int8 and calib is None:
        raise ExportError("int8 export needs calibration images")
    opset = choose_opset(model, options.opset)
    hw = input_hw(model, options)
    graph = build_graph(model, options.outputs, hw, options.postprocess.labels)
    if qat:
        from yolo4.export.qat import use_qdq_export

        use_qdq_export(graph)  # (on build_graph's copy)
    spec = exported_spec(model, options.img_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"path": path, "opset": opset, "outputs": options.outputs}
    with tempfile.TemporaryDirectory(prefix="yolo4-onnx-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        x = torch.rand(options.batch, 3, *hw, generator=torch.Generator().manual_seed(0))
        _export_graph(graph, x, fp32, _trace_names(model, options.outputs), opset, options.dynamic_batch)
        if options.check and qat:  # against its fake-quantised PyTorch forward
            check_qat_file(fp32, model, graph, check_input(options, hw), options, report)
        elif options.check:
            diff = report["max_abs_diff"] = compare_with_torch(fp32, graph, check_input(options, hw))
            if diff > CHECK_ATOL:
                raise ExportError(
                    f"{path}: onnxruntime's output differs from PyTorch by {diff:.3g} "
                    f"(relative to the output scale; allowed {CHECK_ATOL})"
                )
        proto = onnx.load(str(fp32))
        inline_shared_initializers(proto)
        if options.outputs == "nms":
            p = options.postprocess
            proto = append_nms(proto, p.conf, p.iou, p.max_det)
        quant: dict[str, Any] | None = qat_recipe(model) if qat else None
        if options.int8:
            from yolo4.export.quantize import quantize_onnx

            if calib is None:  # checked above; narrows the type
                raise ExportError("int8 export needs calibration images")
            onnx.save(proto, str(fp32))
            q_path = Path(tmp) / "int8.onnx"
            quant = quantize_onnx(
                fp32,
                q_path,
                calib,
                calib_source=calib_source,
                method=options.calib_method,
                tool=options.int8_tool,
                keep_float=options.int8_keep_float,
                weight_bits=options.int8_weight_bits,
            )
            if options.check and options.outputs != "nms":
                report["int8_max_abs_diff"] = compare_with_torch(q_path, graph, check_input(options, hw))
            proto = onnx.load(str(q_path))
        set_metadata(proto, metadata(spec, names, options, quant))
        report["quantization"] = quant or "none"
        part = path.with_name(path.name + ".part")
        onnx.save(proto, str(part))
        os.replace(part, path)
    return report
