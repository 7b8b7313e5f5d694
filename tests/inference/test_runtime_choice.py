"""Which runtime runs a model: the documented rule of `--runtime auto`, the installed-package
fallback, and a clear error for a runtime that is unknown, not installed or cannot read the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import yolo4.darknet as dn
import yolo4.inference.runtime as rt
from yolo4.errors import ExportError, Yolo4Error

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_files(small_cfg_text, tmp_path_factory):
    """A float32 export of the small network and two copies whose metadata say NNCF quantised
    them: with 8-bit weights (files written before the overflow fix) and with 7-bit weights."""
    import onnx

    from yolo4.export.common import ExportOptions
    from yolo4.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("runtime")
    plain = folder / "small.onnx"
    export_onnx(dn.Darknet(dn.parse_cfg(small_cfg_text, "small.cfg")).eval(), plain, ExportOptions(), names=["a", "b"])
    proto = onnx.load(str(plain))
    for p in proto.metadata_props:
        if p.key == "yolo4.quantization":
            p.value = json.dumps({"tool": "nncf", "weights": "int8"})
    nncf = folder / "small-int8.onnx"
    onnx.save(proto, str(nncf))
    for p in proto.metadata_props:
        if p.key == "yolo4.quantization":
            p.value = json.dumps({"tool": "nncf", "weights": "int8, 7-bit range", "weights_7bit": True})
    onnx.save(proto, str(folder / "small-int8-7bit.onnx"))
    for p in proto.metadata_props:
        if p.key == "yolo4.quantization":
            p.value = json.dumps({"tool": "onnxruntime.quantization.quantize_static", "weights": "int8"})
    onnx.save(proto, str(folder / "small-int8-ort.onnx"))
    for p in proto.metadata_props:  # a QAT file trained with qat_weight_bits=8 (or before 7 was the default)
        if p.key == "yolo4.quantization":
            p.value = json.dumps({"tool": "NNCF quantisation-aware training", "weights": "int8", "weights_7bit": False})
    onnx.save(proto, str(folder / "small-int8-qat8.onnx"))
    return plain, nncf


@pytest.fixture
def vnni(monkeypatch):
    """The rule on a CPU with int8 dot products (VNNI), whatever this machine has."""
    monkeypatch.setattr(rt, "int8_dot_product", lambda: True)


def test_the_rule_orders_runtimes_fastest_first(onnx_files, tmp_path, vnni):
    plain, nncf = onnx_files
    assert rt.runtime_preference(plain)[0] == ("onnxruntime", "openvino", "opencv")
    assert rt.runtime_preference(nncf)[0] == ("openvino", "onnxruntime", "opencv")
    assert rt.runtime_preference(tmp_path / "m.tflite")[0] == ("tflite",)
    assert rt.runtime_preference(tmp_path / "m.xml")[0] == ("openvino",)


def test_without_vnni_8bit_int8_weights_go_to_onnxruntime(onnx_files, monkeypatch):
    """OpenVINO's int8 kernels saturate on CPUs without VNNI where weights use all 8 bits
    (yolo-fastest-1.1 on an AVX2 AMD EPYC: heads' SQNR 18 dB against 26 dB); onnxruntime's do not,
    and NNCF's 7-bit weights (yolo4's exports now) do not saturate in OpenVINO either."""
    plain, nncf = onnx_files
    monkeypatch.setattr(rt, "int8_dot_product", lambda: False)
    order, why = rt.runtime_preference(nncf)
    assert order[0] == "onnxruntime" and "without VNNI" in why
    assert rt.runtime_preference(nncf.with_name("small-int8-7bit.onnx"))[0][0] == "openvino"
    assert rt.runtime_preference(plain)[0][0] == "onnxruntime"
    ort_file = {"tool": "onnxruntime.quantization.quantize_static"}  # signed int8 activations
    assert rt.int8_saturates(ort_file, "openvino") and rt.int8_saturates(ort_file, "onnxruntime")
    assert rt.int8_saturates({"tool": "nncf"}, "openvino") and not rt.int8_saturates({"tool": "nncf"}, "onnxruntime")
    assert not rt.int8_saturates("none", "openvino") and not rt.int8_saturates({"weights_7bit": True}, "openvino")
    assert not rt.int8_saturates(ort_file, "tflite")  # XNNPACK: the same agreement as on a VNNI CPU


def test_a_runtime_that_saturates_here_warns(onnx_files, monkeypatch):
    pytest.importorskip("openvino")
    import warnings

    plain, nncf = onnx_files
    monkeypatch.setattr(rt, "int8_dot_product", lambda: False)
    with pytest.warns(
        UserWarning, match=r"small-int8.onnx: int8 weights .* no VNNI: openvino's .* --runtime onnxruntime"
    ):
        rt.load_exported(nncf, runtime="openvino")
    with pytest.warns(UserWarning, match=r"small-int8-ort.onnx: .* onnxruntime's int8 .* by default now\)$"):
        rt.load_exported(nncf.with_name("small-int8-ort.onnx"), runtime="onnxruntime")
    with pytest.warns(UserWarning, match=r"small-int8-qat8.onnx: .* Train it again with --qat \(int8 weights take 7"):
        rt.load_exported(nncf.with_name("small-int8-qat8.onnx"), runtime="openvino")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.load_exported(nncf, runtime="onnxruntime")  # NNCF's layout: exact in onnxruntime
        rt.load_exported(nncf.with_name("small-int8-7bit.onnx"), runtime="openvino")
        rt.load_exported(plain, runtime="openvino")
        monkeypatch.setattr(rt, "int8_dot_product", lambda: True)
        rt.load_exported(nncf, runtime="openvino")


def test_auto_takes_the_first_installed_runtime_and_says_so(onnx_files, monkeypatch, capsys, vnni):
    plain, nncf = onnx_files
    missing: set[str] = set()
    monkeypatch.setattr(rt, "installed", lambda name: name not in missing)
    assert rt.resolve_runtime(plain, "auto", announce=True) == "onnxruntime"
    assert "runtime: onnxruntime for small.onnx (auto: " in capsys.readouterr().err
    assert rt.choose_runtime(nncf) == "openvino"
    missing.add("openvino")
    assert rt.choose_runtime(nncf) == "onnxruntime"
    missing.add("onnxruntime")
    assert rt.choose_runtime(plain) == "opencv"
    missing.add("opencv")
    with pytest.raises(ExportError, match=r"small.onnx: no runtime for .onnx files is installed \(pip install"):
        rt.choose_runtime(plain)
    assert rt.resolve_runtime("yolov4-tiny", "auto") == "pytorch"  # darknet models: PyTorch, silently
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("model", "runtime", "message"),
    [
        ("small.onnx", "pytorch", r"small.onnx: pytorch cannot run .onnx files \(use onnxruntime, openvino, opencv\)"),
        ("small.onnx", "tflite", "small.onnx: tflite cannot run .onnx files"),
        ("m.tflite", "onnxruntime", r"m.tflite: onnxruntime cannot run .tflite files \(use tflite\)"),
        ("m.xml", "opencv", "m.xml: opencv cannot run .xml files"),
        ("yolov4-tiny.cfg", "openvino", "yolov4-tiny.cfg: --runtime openvino runs exported files"),
        ("small.onnx", "tensorrt", "unknown runtime 'tensorrt'"),
    ],
)
def test_a_runtime_that_cannot_read_the_file_is_refused_by_name(model, runtime, message):
    with pytest.raises(Yolo4Error, match=message):
        rt.resolve_runtime(model, runtime)


def test_a_runtime_that_is_not_installed_is_refused_with_the_pip_command(onnx_files, monkeypatch):
    plain, _ = onnx_files
    monkeypatch.setattr(rt, "installed", lambda name: name != "openvino")
    with pytest.raises(ExportError, match=r"small.onnx: --runtime openvino is not installed here .*yolo4\[openvino\]"):
        rt.load_exported(plain, runtime="openvino")
    from yolo4.inference.detector import build_detector

    with pytest.raises(ExportError, match="not installed here"):
        build_detector(plain, runtime="openvino")


def test_opencv_runs_the_onnx_file_as_onnxruntime_does(onnx_files):
    plain, _ = onnx_files
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    cv, ort = rt.load_exported(plain, runtime="opencv"), rt.load_exported(plain, runtime="onnxruntime")
    assert (cv.runtime, ort.runtime) == ("opencv", "onnxruntime") and cv.names == ["a", "b"]
    for a, b in zip(cv.run_numpy(x), ort.run_numpy(x)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_cli_says_which_runtime_it_chose_and_names_a_bad_one(onnx_files, capsys):
    from yolo4.cli import main

    plain, _ = onnx_files
    assert main(["benchmark", "--model", str(plain), "--runtime", "tflite"]) == 2
    assert "small.onnx: tflite cannot run .onnx files" in capsys.readouterr().err
    assert main(["benchmark", "--model", str(plain), "--iters", "1", "--warmup", "0"]) == 0
    out, err = capsys.readouterr()
    assert "runtime: onnxruntime for small.onnx (auto" in err and "cpu (onnxruntime)" in out
    assert main(["benchmark", "--model", str(plain), "--runtime", "opencv", "--iters", "1", "--warmup", "0"]) == 0
    assert "cpu (opencv)" in capsys.readouterr().out
