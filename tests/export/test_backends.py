"""`yolo4 benchmark --backends`: every back-end runs the same model and the table compares them
(correctness of the plumbing only; no timing is asserted)."""

from __future__ import annotations

import math

import pytest

from yolo4.errors import Yolo4Error
from yolo4.export.backends import BackendTiming, backends_table, compare_backends
from yolo4.inference.device import cpu_description

pytest.importorskip("onnxruntime")


def test_compare_backends_runs_each_backend(make_model):
    model = make_model("yolov4-tiny", img_size=64)
    rows = compare_backends(
        model, backends=("pytorch", "onnxruntime", "opencv-darknet"), threads=[1], repeats=2, warmup=1, progress=False
    )
    assert [(r.backend, r.threads) for r in rows] == [("pytorch", 1), ("onnxruntime", 1), ("opencv-darknet", 1)]
    assert all(math.isfinite(r.ms) and r.ms > 0 for r in rows), rows
    text = backends_table(rows)
    assert "| opencv-darknet | " in text and "1.00x" in text


def test_pytorch_bf16_runs_where_the_cpu_has_native_bf16_and_says_why_not_elsewhere(make_model, monkeypatch):
    import yolo4.inference.fastpath as fastpath

    model = make_model("yolov4-tiny", img_size=64)
    for native in (True, False):
        monkeypatch.setattr(fastpath, "native_bf16", lambda native=native: native)
        [row] = compare_backends(model, backends=("pytorch-bf16",), threads=[1], repeats=1, warmup=1, progress=False)
        if native:
            assert math.isfinite(row.ms) and row.ms > 0 and not row.note
        else:
            assert math.isnan(row.ms) and "needs native bf16" in row.note


def test_backends_table_reports_failures():
    rows = [
        BackendTiming("opencv-darknet", 1, 100.0),
        BackendTiming("pytorch", 1, 50.0),
        BackendTiming("tflite", 1, float("nan"), "needs the 'tflite' extra"),
    ]
    text = backends_table(rows)
    assert "| pytorch | 50.0 | 2.00x |" in text
    assert "| tflite | n/a |" in text and "tflite: needs the 'tflite' extra" in text


def test_unknown_backend_is_refused(make_model):
    with pytest.raises(Yolo4Error, match="unknown back-end"):
        compare_backends(make_model("yolov4-tiny", img_size=64), backends=("cuda-magic",), progress=False)


def test_cpu_description_names_the_vector_extensions():
    assert "logical cores" in cpu_description()
