"""Exported files with missing or forged metadata, or that are not models at all, are refused by
name before anything runs; `parse_metadata` is fuzzed."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import yolo4.darknet as dn
from yolo4.errors import CfgError, ExportError
from yolo4.inference.runtime import ExportMetadata, load_exported, parse_metadata


def _meta(cfg_text: str, **changes: str | None) -> dict[str, str]:
    """The metadata yolo4 writes for `cfg_text` with classes cat and dog, with `changes` (None: removed)."""
    from yolo4.export.common import ExportOptions, metadata

    meta = metadata(dn.parse_cfg(cfg_text, "small.cfg"), ["cat", "dog"], ExportOptions())
    for k, v in changes.items():
        key = "yolo4." + k
        if v is None:
            meta.pop(key)
        else:
            meta[key] = v
    return meta


@pytest.fixture(scope="module")
def onnx_file(small_cfg_text, tmp_path_factory):
    """A real ONNX export of the small network (raw heads), and a function that rewrites its metadata."""
    import onnx

    from yolo4.export.common import ExportOptions
    from yolo4.export.onnx import export_onnx, set_metadata

    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_onnx(
        dn.Darknet(dn.parse_cfg(small_cfg_text, "small.cfg")).eval(), path, ExportOptions(), names=["cat", "dog"]
    )

    def forged(dest, **changes):
        proto = onnx.load(str(path))
        set_metadata(proto, _meta(small_cfg_text, **changes))
        onnx.save(proto, str(dest))
        return dest

    return path, forged


def test_genuine_metadata_parses(small_cfg_text):
    m = parse_metadata(_meta(small_cfg_text), "x.onnx")
    assert isinstance(m, ExportMetadata) and m.outputs == "heads" and m.names == ["cat", "dog"]
    assert m.num_outputs() == 1 and (m.spec.net.height, m.spec.net.width) == (64, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cfg": None}, "not a yolo4 export"),
        ({"cfg": "[net]\nwidth=64\n[convolutional]\nfilters=x\n"}, r"x.onnx\[yolo4.cfg\]"),
        ({"cfg": "[net]\nwidth=64\nheight=64\n[convolutional]\nfilters=4\nsize=1\n"}, "no \\[yolo\\] layer"),
        ({"outputs": "boxes-v9"}, "yolo4.outputs='boxes-v9' is none of"),
        ({"names": "[1, 2]"}, "yolo4.names is not a list of class names"),
        ({"names": '["a", "b", "c"]'}, "3 names but the model 2 classes"),
        ({"names": "{not json"}, "yolo4.names is not valid JSON"),
        ({"preprocess": "[]"}, "yolo4.preprocess is not a JSON object"),
        ({"preprocess": '{"resize": "crop"}'}, "resize 'crop' is not stretch or letterbox"),
        ({"nms": "5"}, "yolo4.nms is not a JSON object"),
        ({"quantization": "{"}, "yolo4.quantization is not valid JSON"),
    ],
)
def test_forged_metadata_is_named(small_cfg_text, changes, message):
    with pytest.raises((ExportError, CfgError), match=message):
        parse_metadata(_meta(small_cfg_text, **changes), "x.onnx")


def test_files_that_are_not_models_are_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(ExportError, match="junk.onnx: not an ONNX model"):
        load_exported(tmp_path / "junk.onnx")
    (tmp_path / "weights.tflite").write_bytes(bytes(64))
    with pytest.raises(ExportError, match="weights.tflite: not a TFLite model"):
        load_exported(tmp_path / "weights.tflite")
    (tmp_path / "broken.tflite").write_bytes(b"\xff\xff\xff\x7fTFL3" + bytes(56))
    with pytest.raises(ExportError, match="broken.tflite: damaged TFLite model"):
        load_exported(tmp_path / "broken.tflite")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ExportError, match="dir.onnx: is a folder"):
        load_exported(tmp_path / "dir.onnx")


def test_onnx_graph_that_disagrees_with_its_metadata_is_refused(onnx_file, small_cfg_text, tmp_path):
    path, forged = onnx_file
    net = load_exported(path)
    assert net.input_hw == (64, 64) and net.names == ["cat", "dog"]
    other_size = small_cfg_text.replace("width=64", "width=96").replace("height=64", "height=96")
    with pytest.raises(
        ExportError, match=r"graph's input is \[1, 3, 64, 64\] but its metadata describe \(B, 3, 96, 96\)"
    ):
        load_exported(forged(tmp_path / "size.onnx", cfg=other_size))
    with pytest.raises(ExportError, match="the graph returns 1 tensors but its metadata \\(outputs=decoded\\) need 2"):
        load_exported(forged(tmp_path / "kind.onnx", outputs="decoded"))
    with pytest.raises(ExportError, match="not a yolo4 export"):
        load_exported(forged(tmp_path / "bare.onnx", cfg=None))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ExportError, match="cut.onnx"):
        load_exported(cut)


# ---------------------------------------------------------------- fuzzing parse_metadata
@st.composite
def forged_metadata(draw, genuine: dict[str, str]):
    """`genuine` with some entries removed, replaced by random or JSON-shaped text, or edited
    character by character."""
    meta = dict(genuine)
    json_like = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=8,
    ).map(json.dumps)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from([*genuine, "yolo4.other"]))
        op = draw(st.sampled_from(["drop", "json", "text", "edit"]))
        if op == "drop":
            meta.pop(key, None)
        elif op == "json":
            meta[key] = draw(json_like)
        elif op == "text":
            meta[key] = draw(st.text(max_size=40))
        elif key in meta:
            s = meta[key]
            i = draw(st.integers(0, len(s)))
            meta[key] = s[:i] + draw(st.text(max_size=4)) + s[i + draw(st.integers(0, 8)) :]
    return meta


def _check(meta: dict[str, str]) -> None:
    try:
        m = parse_metadata(meta, "fuzz.onnx")
    except (ExportError, CfgError) as e:
        assert "fuzz.onnx" in str(e)
        return
    assert m.outputs in ("heads", "decoded", "nms") and m.num_outputs() >= 1
    assert m.names is None or (
        len(m.names) == m.spec.yolo_layers[0].classes and all(isinstance(n, str) for n in m.names)
    )
    assert isinstance(m.preprocess, dict) and (m.nms is None or isinstance(m.nms, dict))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_metadata_raises_only_project_errors(small_cfg_text, data):
    _check(data.draw(forged_metadata(_meta(small_cfg_text))))


@pytest.mark.slow
@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_metadata_raises_only_project_errors_long(small_cfg_text, data):
    _check(data.draw(forged_metadata(_meta(small_cfg_text))))
