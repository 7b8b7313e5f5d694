"""int8 post-training quantisation: calibration images and onnxruntime static quantisation.

    calib = calibration_images("data/shapes", 100, (320, 320), "stretch")   # float32 (N, 3, H, W)
    recipe = quantize_onnx("model.onnx", "model-int8.onnx", calib)

Calibration images are prepared exactly as `yolo4 detect` prepares its input (the same
`yolo4.inference.detector.preprocess`: resize rule from the cfg, RGB, / 255), and that rule is
recorded in the exported model's metadata, because a calibration/inference mismatch in
pre-processing shifts every activation range.

Quantisation-friendly choices made here (and why):
  * QDQ format with per-channel symmetric int8 weights: one scale per output channel, so
    a conv whose channels differ in magnitude keeps its small channels (per-tensor weight
    scales are the usual cause of int8 collapse after BN folding).
  * Activations int8, per tensor. Two quantisers: NNCF (the default when installed:
    asymmetric activation ranges from min/max statistics, then fast bias correction, which
    re-centres each layer's output after its weights are rounded) and onnxruntime's
    `quantize_static` (`--calib-method percentile|minmax|entropy`). On the real COCO model
    yolo-fastest-1.1 (depthwise convolutions) calibrated on 100 photos, onnxruntime's int8
    kept 0.86 mAP50 of its float32 detections, NNCF's 0.99 (benchmarks/bench_export.py).
  * Mixed precision: `keep_float` cfg layers stay float (chosen by hand or by
    `yolo4.export.sensitivity`).
  * No -inf in the graph: darknet's max-pool padding is traced as edge padding (same
    maxima), because a tensor holding -inf gets no int8 scale (yolov4-tiny's QDQ model
    collapsed to mAP 0 before this).
  * Only the network is quantised; decoding (boxes in pixels, exp, sigmoid) and NMS stay
    float32: pixel coordinates and probabilities must not share an int8 scale.
  * Leaky instead of Mish where a model is trained for int8 (`yolov4-csp-leaky`): Mish
    is unbounded-below-smooth and is decomposed into three ops (Softplus, Tanh, Mul), each a
    rounding point in int8; leaky is one op that NPUs run natively.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from yolo4.data.formats.common import IMAGE_SUFFIXES
from yolo4.errors import DataError, ExportError
from yolo4.export.common import INT8_TOOLS

CALIB_SEED = 0
CALIB_COLLECT_BYTES = 2 << 30  # activations onnxruntime's calibration may hold at once (its peak is a few times this)


def _images_in_folder(folder: Path) -> list[Path]:
    from yolo4.data.formats.common import list_images

    return list_images(folder)


def calibration_paths(source: str | os.PathLike, count: int, split: str = "train") -> tuple[list[Path], str]:
    """Up to `count` image paths for calibration, chosen reproducibly (seeded) from `source`.

    Args:
        source: a folder with image files directly inside (used as is, recursively), or a
            dataset `yolo4.data.dataset.load_dataset` reads (its `split` images are used).
    Returns:
        (paths, description of where they came from).
    Raises:
        ExportError naming `source` when it holds no image files.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ExportError(f"{path}: calibration data not found (give a dataset or a folder of images)")
    paths: list[Path] = []
    where = ""
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if p.is_file()):
        # images directly inside: a plain image folder (read as is: nothing is written beside it)
        paths, where = _images_in_folder(path), f"{path} [image folder]"
    else:
        try:
            from yolo4.data.dataset import load_dataset

            ds = load_dataset(path, split, progress=False)
            paths, where = list(ds.image_paths), f"{path} [{split} split, {len(ds)} images]"
        except DataError:
            if path.is_dir():
                paths, where = _images_in_folder(path), f"{path} [image folder]"
    if not paths:
        raise ExportError(f"{path}: no images to calibrate with (not a dataset yolo4 reads and no image files in it)")
    if len(paths) > count:
        pick = np.random.default_rng(CALIB_SEED).choice(len(paths), size=count, replace=False)
        paths = [paths[i] for i in sorted(pick)]
    return paths, where


def calibration_images(
    source: str | os.PathLike, count: int, input_hw: tuple[int, int], resize: str = "stretch", split: str = "train"
) -> tuple[np.ndarray, str]:
    """Calibration batch prepared as `yolo4 detect` prepares images.

    Returns:
        (float32 (N, 3, H, W) in [0, 1] RGB, N <= count, description of the source).
    Raises:
        ExportError when no image of the source can be read (each unreadable file is skipped).
    """
    from yolo4.data.sources import load_image
    from yolo4.inference.preprocess import preprocess

    paths, where = calibration_paths(source, count, split)
    arrays, bad = [], []
    for p in paths:
        try:
            img = load_image(p)
        except DataError as e:
            bad.append(str(e))
            continue
        x, _ = preprocess([img], input_hw, resize)
        arrays.append(x[0].numpy())
    if not arrays:
        raise ExportError(
            f"{source}: none of its {len(paths)} image files can be read (first: {bad[0] if bad else '?'})"
        )
    note = f"{where}, {len(arrays)} used" + (f", {len(bad)} unreadable skipped" if bad else "")
    return np.stack(arrays).astype(np.float32), note


def network_nodes(model_path: str | os.PathLike, keep_float: Sequence[int] = ()) -> tuple[list[str], list[str]]:
    """Node names of an exported yolo4 ONNX graph split into (to quantise, to keep float).

    The exporter's wrappers hold the network as `model`, so its nodes are named
    "/model/blocks.<i>/..." (or "/decoded/model/blocks.<i>/..."); everything else (decoding,
    NMS) stays float, and so do the nodes of the cfg layers listed in `keep_float`.
    """
    import onnx

    m = onnx.load(str(model_path))
    prefixes = ("/model/", "/decoded/model/")
    floats = tuple(f"{p}blocks.{i}/" for p in prefixes for i in keep_float)
    inside: list[str] = []
    outside: list[str] = []
    for n in m.graph.node:
        quantise = n.name.startswith(prefixes) and not n.name.startswith(floats)
        (inside if quantise else outside).append(n.name)
    return inside, outside


def resolve_tool(tool: str) -> str:
    """ "auto" -> "nncf" when NNCF is installed, else "onnxruntime"; other names are checked."""
    if tool not in INT8_TOOLS:
        raise ExportError(f"unknown int8 tool '{tool}' (choose from {', '.join(INT8_TOOLS)})")
    if tool != "auto":
        return tool
    try:
        import nncf  # noqa: F401
    except ImportError:
        return "onnxruntime"
    return "nncf"


def require_nncf():
    try:
        import nncf
    except ImportError as e:
        raise ExportError(f"int8 with NNCF needs the 'openvino' extra: pip install 'yolo4[openvino]' ({e})") from None
    return nncf


class _Reader:
    """onnxruntime CalibrationDataReader over a (N, 3, H, W) array, `batch` images a call; its
    items are the N // batch batches, and `set_range` (onnxruntime's chunked calibration)
    limits it to items [start_index, end_index)."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int):
        self.images, self.input_name, self.batch = images, input_name, batch
        self.i, self.end = 0, len(self)

    def __len__(self) -> int:
        return len(self.images) // self.batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        x = self.images[self.i * self.batch : (self.i + 1) * self.batch]
        self.i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self.i = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index, min(end_index, len(self))


def activation_bytes(model: Any) -> int:
    """Bytes of the float32 tensors one run of an ONNX model produces (every node output whose
    shape inference gives one; a dynamic dimension counts as 1): what onnxruntime's calibration
    keeps per calibration batch, at most."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    total = 0
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT or not t.HasField("shape"):
            continue
        total += 4 * int(np.prod([d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim]))
    return total


def calibration_chunk(items: int, item_bytes: int, budget: int) -> int:
    """How many calibration items onnxruntime collects before it folds them into its statistics:
    the largest divisor of `items` (its chunked calibration needs one) whose activations,
    `item_bytes` each, fit in `budget` bytes; at least 1."""
    cap = max(1, budget // max(item_bytes, 1))
    return max(d for d in range(1, min(items, cap) + 1) if items % d == 0) if items > 0 else 1


def quantize_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib: np.ndarray,
    calib_source: str = "",
    input_name: str = "images",
    method: str = "percentile",
    tool: str = "auto",
    keep_float: Sequence[int] = (),
    weight_bits: int = 7,
) -> dict[str, Any]:
    """Static int8 quantisation (QDQ, per-channel int8 weights, int8 activations) of an
    exported yolo4 ONNX file; decoding/NMS nodes and the `keep_float` cfg layers stay float32.

    Args:
        calib: float32 (N, 3, H, W) calibration images in [0, 1] (see `calibration_images`).
        method: onnxruntime's activation ranges: "minmax", "percentile" (99.999th) or "entropy".
        tool: "nncf" (NNCF's post-training quantisation: asymmetric activations, fast bias
            correction), "onnxruntime" (`quantize_static`), or "auto" (NNCF when installed).
        keep_float: cfg layer indices whose nodes stay float (mixed precision).
        weight_bits: 7: weights in -64..64 (depthwise convolutions: the whole range), which CPUs
            without VNNI do not saturate (`ExportOptions.int8_weight_bits`); 8: the whole range.
    Returns:
        the recipe (JSON-able dict) that goes into the model's metadata.
    """
    import onnx

    tool = resolve_tool(tool)
    m = onnx.load(str(fp32_path))
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    batch = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else 1
    if len(calib) < batch:
        raise ExportError(f"{len(calib)} calibration images but the model's static batch is {batch}")
    _, exclude = network_nodes(fp32_path, keep_float)
    used = int(len(calib) // batch * batch)
    seven = "; 7-bit range (-64..64) outside depthwise convolutions, which CPUs without VNNI do not saturate"
    recipe = {
        "format": "QDQ",
        "weights": "int8 symmetric, per output channel" + (seven if weight_bits == 7 else ""),
        "weights_7bit": weight_bits == 7,
        "calibration_images": used,
        "calibration_source": calib_source,
        "float32": "decoding and NMS (everything outside the network)",
        "float_layers": [int(i) for i in keep_float],
    }
    if tool == "nncf":
        _quantize_nncf(m, out_path, calib, input_name, batch, exclude, weight_bits)
        return {
            "tool": "nncf.quantize (ONNX backend, MIXED preset)",
            "activations": "int8 asymmetric, per tensor, NNCF min/max statistics",
            "bias_correction": "fast bias correction",
            **recipe,
        }
    _quantize_ort(fp32_path, out_path, calib, input_name, batch, exclude, method, weight_bits=weight_bits)
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "activations": f"int8 asymmetric, per tensor, {method} calibration",
        **recipe,
    }


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF's (and the root logger's) INFO lines and warnings silenced for the block."""
    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def nncf_ptq_options(nncf: Any, num_items: int) -> dict[str, Any]:
    """The NNCF post-training recipe shared by the ONNX int8 export and QAT's calibration:
    `nncf.quantize` keywords (mixed preset: symmetric weights, asymmetric activations; every
    calibration item; fast bias correction)."""
    return {"preset": nncf.QuantizationPreset.MIXED, "subset_size": num_items, "fast_bias_correction": True}


def _quantize_nncf(
    model: Any, out_path, calib: np.ndarray, input_name: str, batch: int, exclude: list[str], weight_bits: int = 7
) -> None:
    import onnx

    nncf = require_nncf()
    items = [{input_name: calib[i : i + batch]} for i in range(0, len(calib) - batch + 1, batch)]
    with quiet_nncf():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(items),
            ignored_scope=nncf.IgnoredScope(names=exclude, validate=False),
            **nncf_ptq_options(nncf, len(items)),
            # 7 bits: NNCF's overflow fix in every (non-depthwise) convolution, not only the first
            # (its default), so that the file runs the same on CPUs without VNNI, where OpenVINO's
            # int8 kernels saturate (yolo-fastest-1.1 on an AVX2 AMD EPYC: heads' SQNR 18.2 dB with
            # 8-bit weights, 25.9 with 7-bit; exact int8 arithmetic 26.3 and 25.7 dB)
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix.ENABLE if weight_bits == 7 else nncf.OverflowFix.DISABLE
            ),
        )
    onnx.save(quantized, str(out_path))


def _quantize_ort(
    fp32_path,
    out_path,
    calib: np.ndarray,
    input_name: str,
    batch: int,
    exclude,
    method: str,
    collect_bytes: int | None = None,
    weight_bits: int = 7,
) -> None:
    """onnxruntime's `quantize_static`, its calibration collecting at most `collect_bytes`
    (default `CALIB_COLLECT_BYTES`) of activations at a time; 7 `weight_bits`: its `reduce_range`."""
    collect_bytes = CALIB_COLLECT_BYTES if collect_bytes is None else collect_bytes
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ExportError(f"unknown calibration method '{method}' (choose from {', '.join(methods)})")
    extra: dict[str, bool | float] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    reader = _Reader(calib, input_name, batch)
    import onnx

    chunk = calibration_chunk(len(reader), activation_bytes(onnx.load(str(fp32_path))), collect_bytes)
    if chunk < len(reader):
        # onnxruntime keeps every activation of every calibration batch until it computes the
        # ranges (~17 GB for yolov4-csp-leaky on 100 images at 256 px); in chunks it folds each
        # one into its histograms / min-max and frees it (same bins: min-max ranges are equal)
        extra["CalibStridedMinMax"] = chunk
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice with the root logger
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints its histogram steps
            warnings.simplefilter("ignore")  # 0/0 scales of constant tensors outside the network
            quantize_static(
                str(fp32_path),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                reduce_range=weight_bits == 7,
                calibrate_method=methods[method],
                extra_options=extra,
            )
    finally:
        root.setLevel(level)
