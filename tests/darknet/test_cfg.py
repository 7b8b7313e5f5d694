"""cfg text <-> NetworkSpec: round trips, errors that name file/line/key, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import yolo4.darknet as dn
from yolo4.darknet.cfg import parse_sections
from yolo4.darknet.layers import Convolutional, Route, YoloLayer
from yolo4.errors import CfgError

REFERENCE_CFGS = ["yolov4", "yolov4-tiny", "yolov4-csp", "yolov4x-mish", "yolov3", "yolov3-tiny"]

TINY = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


@pytest.mark.parametrize("name", REFERENCE_CFGS)
def test_round_trip_keeps_every_layer_and_key(reference, tmp_path, name):
    path = reference / "cfg" / f"{name}.cfg"
    spec = dn.read_cfg(path)
    out = dn.write_cfg(spec, tmp_path / "out.cfg")
    again = dn.read_cfg(out)
    assert again == spec
    # every key of the original file survives (as a typed field or verbatim in extra)
    original = parse_sections(path.read_text(), str(path))
    written = parse_sections(out.read_text(), str(out))
    assert len(original) == len(written)
    for (k1, _, o1, _), (k2, _, o2, _) in zip(original, written):
        assert k1 == k2
        assert set(o1) <= set(o2), f"[{k1}] lost keys {set(o1) - set(o2)}"


def test_typed_fields_and_extras(reference):
    spec = dn.read_cfg(reference / "cfg" / "yolov4.cfg")
    assert (spec.net.width, spec.net.height, spec.net.channels) == (608, 608, 3)
    assert spec.net.options["mosaic"] == "1" and spec.net.options["saturation"] == "1.5"  # white space stripped
    assert spec.net.get("learning_rate", 0.0, float) == pytest.approx(0.0013)
    yolo = spec.yolo_layers[0]
    assert yolo.mask == [0, 1, 2] and yolo.classes == 80 and yolo.num == 9
    assert yolo.anchors[0] == (12, 16) and yolo.head_anchors == [(12, 16), (19, 36), (40, 28)]
    assert yolo.scale_x_y == pytest.approx(1.2) and yolo.iou_loss == "ciou" and yolo.nms_kind == "greedynms"
    route = next(layer for layer in spec.layers if isinstance(layer, Route) and len(layer.layers) == 4)
    assert route.layers == [-1, -3, -5, -6]  # SPP
    csp = dn.read_cfg(reference / "cfg" / "yolov4-tiny.cfg")
    grouped = [layer for layer in csp.layers if isinstance(layer, Route) and layer.groups == 2]
    assert grouped and all(layer.group_id == 1 for layer in grouped)
    scaled = dn.read_cfg(reference / "cfg" / "yolov4-csp.cfg").yolo_layers[0]
    assert scaled.new_coords == 1 and scaled.scale_x_y == 2.0


def test_comments_blank_lines_and_spaces():
    spec = dn.parse_cfg("# top comment\n\n[net]\n width = 32 \n;x\nheight=32\n[convolutional]\nfilters = 4\n")
    assert spec.net.width == 32
    assert isinstance(spec.layers[0], Convolutional) and spec.layers[0].filters == 4


@pytest.mark.parametrize(
    "text,message",
    [
        (TINY.replace("[yolo]", "[yolox]"), "a.cfg:18: unknown layer [yolox]"),
        (TINY.replace("filters=16\n", ""), "a.cfg:5: [convolutional] is missing the required key 'filters'"),
        (TINY.replace("stride=2", "stride=two"), "a.cfg:9: [convolutional] key 'stride' has an invalid value 'two'"),
        (TINY.replace("anchors=10,14, 23,27, 37,58\n", ""), "[yolo] is missing the required key 'anchors'"),
        (TINY.replace("activation=leaky", "activation=wobbly"), "unknown activation 'wobbly'"),
        (TINY.replace("mask=0,1,2", "mask=0,1,7"), "mask [7] refers to anchors that do not exist"),
        (TINY.replace("classes=1\n", "classes=1\nclasses=2\n"), "a.cfg:22: key 'classes' is given twice"),
        ("width=3\n[net]\n", "a.cfg:1: 'width=3' comes before any [section]"),
        ("[convolutional]\nfilters=1\n", "a.cfg:1: the first section must be [net]"),
        ("[net]\nwidth=8\n", "no layers"),
        ("", "no sections"),
        ("[net\n", "malformed section header"),
    ],
)
def test_errors_name_file_line_and_key(text, message):
    with pytest.raises(CfgError) as e:
        dn.parse_cfg(text, "a.cfg")
    assert message in str(e.value)


@pytest.mark.parametrize(
    "extra,message",
    [
        ("[route]\nlayers=-9\n", "a.cfg:23: [route] layers=-9 refers to layer -6, which does not exist"),
        ("[route]\nlayers=5\n", "refers to layer 5, which does not exist before layer 3"),
        (
            "[shortcut]\nfrom=-3\n",
            "[shortcut] from=-3 has shape (16, 32, 32) but the previous layer gives (18, 32, 32)",
        ),
        (
            "[convolutional]\nfilters=7\nsize=1\nactivation=linear\n[yolo]\nmask=0\nanchors=1,1\nclasses=1\nnum=1\n",
            "[yolo] expects 6 channels (1 anchors x (5 + 1 classes)) but receives 7",
        ),
    ],
)
def test_connection_errors(extra, message):
    spec = dn.parse_cfg(TINY + extra, "a.cfg")
    with pytest.raises(CfgError) as e:
        dn.infer_shapes(spec)
    assert message in str(e.value)


def test_read_cfg_missing_file(tmp_path):
    with pytest.raises(CfgError, match="nope.cfg: cannot read cfg"):
        dn.read_cfg(tmp_path / "nope.cfg")


def test_layer_dataclass_round_trip():
    layer = YoloLayer(
        mask=[1],
        anchors=[(1.5, 2.0), (3.0, 4.0)],
        classes=2,
        num=2,
        scale_x_y=1.05,
        extra={"counters_per_class": "1,2"},
    )
    again = YoloLayer.from_options(layer.to_options())
    assert again == layer


_MUTATIONS = st.lists(
    st.tuples(
        st.integers(0, 10_000),
        st.sampled_from(["delete", "dup", "digit", "neg", "bracket", "equals", "garbage", "swap"]),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(text: str, ops) -> str:
    lines = text.splitlines()
    for pos, op in ops:
        if not lines:
            break
        i = pos % len(lines)
        line = lines[i]
        if op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "digit":
            lines[i] = "".join("9" if ch.isdigit() else ch for ch in line)
        elif op == "neg":
            lines[i] = line.replace("=", "=-", 1)
        elif op == "bracket":
            lines[i] = line.replace("[", "").replace("]", "")
        elif op == "equals":
            lines[i] = line.replace("=", "")
        elif op == "garbage":
            lines[i] = line + ",x\x00é"
        elif op == "swap":
            j = (pos // 7) % len(lines)
            lines[i], lines[j] = lines[j], line
    return "\n".join(lines)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(_MUTATIONS)
def test_fuzzed_cfg_raises_only_cfg_error(ops):
    text = _mutate(TINY + "[route]\nlayers=-1,-3\n[maxpool]\nsize=2\nstride=2\n[upsample]\nstride=2\n", ops)
    try:
        spec = dn.parse_cfg(text, "fuzz.cfg")
        dn.infer_shapes(spec)
    except CfgError as e:
        assert "fuzz.cfg" in str(e)
