"""Every zoo builder against the official darknet cfg of the same name, and the
name/cfg -> spec/module plumbing the rest of the project uses."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import yolo4.darknet as dn
from yolo4.darknet.layers import Convolutional, Shortcut, YoloLayer
from yolo4.errors import CfgError
from yolo4.models import (
    ZOO,
    build,
    diff_specs,
    load_model,
    model_info,
    resolve_spec,
    set_num_classes,
)

OFFICIAL = ["yolov3", "yolov3-tiny", "yolov4", "yolov4-tiny", "yolov4-csp", "yolov4x-mish"]

# ../shared/reference/README.md: (cfg, input, darknet "Total BFLOPS", trainable params)
README_FIGURES = [
    ("yolov4", 608, 128.459, 64_363_101),
    ("yolov4", 416, 60.137, 64_363_101),
    ("yolov4-tiny", 416, 6.910, 6_056_606),
    ("yolov4-csp", 512, 77.003, 52_921_437),
    ("yolov4-csp", 640, 120.317, 52_921_437),
    ("yolov4x-mish", 640, 221.986, 99_751_053),
    ("yolov3", 416, 65.879, "61.949 M"),
    ("yolov3-tiny", 416, 5.571, "8.852 M"),
]


def reference_spec(reference, name):
    return dn.read_cfg(reference / "cfg" / f"{name}.cfg")


def assert_same(built, expected):
    diff = diff_specs(built, expected, limit=30)
    assert not diff, f"{built.source} differs from {expected.source}:\n" + "\n".join(diff)
    assert built.net == expected.net
    assert built.layers == expected.layers  # the dataclasses, extras included


def heads_and_feeders(spec):
    return {i for i, layer in enumerate(spec.layers) if isinstance(layer, YoloLayer) for i in (i - 1, i)}


def test_zoo_names():
    assert set(ZOO) == set(OFFICIAL) | {"yolov4-csp-leaky"}


@pytest.mark.parametrize("name", OFFICIAL)
def test_builder_is_the_official_cfg_layer_for_layer(reference, name):
    assert_same(build(name), reference_spec(reference, name))


@pytest.mark.parametrize("name", OFFICIAL)
def test_written_cfg_reads_back_as_the_official_cfg(reference, tmp_path, name):
    path = dn.write_cfg(build(name), tmp_path / f"{name}.cfg")
    assert_same(dn.read_cfg(path), reference_spec(reference, name))


def test_csp_leaky_is_csp_with_leaky_at_448(reference):
    expected = copy.deepcopy(reference_spec(reference, "yolov4-csp"))
    expected.net.width = expected.net.height = 448
    for layer in expected.layers:
        if isinstance(layer, (Convolutional, Shortcut)) and layer.activation == "mish":
            layer.activation = "leaky"
    built = build("yolov4-csp-leaky")
    assert_same(built, expected)
    assert (built.net.height, built.net.width) == (448, 448)
    assert not [layer for layer in built.layers if getattr(layer, "activation", "") == "mish"]


@pytest.mark.parametrize("name,size,bflops,params", README_FIGURES)
def test_readme_figures(name, size, bflops, params):
    info = model_info(build(name), (size, size))
    assert f"{info.bflops:.3f}" == f"{bflops:.3f}"
    assert (f"{info.params / 1e6:.3f} M" if isinstance(params, str) else info.params) == params


@pytest.mark.parametrize("name", sorted(ZOO))
def test_num_classes_changes_only_the_heads(name):
    base, three = build(name), build(name, num_classes=3)
    changed = {i for i, (a, b) in enumerate(zip(base.layers, three.layers)) if a != b}
    assert len(base.layers) == len(three.layers)
    assert changed == heads_and_feeders(base)
    for i, layer in enumerate(three.layers):
        if isinstance(layer, YoloLayer):
            feeder = three.layers[i - 1]
            assert layer.classes == 3 and feeder.filters == len(layer.mask) * (5 + 3)
            assert dataclasses.replace(layer, classes=80) == base.layers[i]
            assert dataclasses.replace(feeder, filters=base.layers[i - 1].filters) == base.layers[i - 1]
    assert base.net == three.net


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("activation,darknet_name", [("leaky", "leaky"), ("mish", "mish"), ("silu", "swish")])
def test_activation_replaces_backbone_and_neck_not_heads(name, activation, darknet_name):
    base, spec = build(name), build(name, activation=activation)
    heads = heads_and_feeders(base)
    for i, (a, b) in enumerate(zip(base.layers, spec.layers)):
        if isinstance(a, Convolutional):
            assert b.activation == (a.activation if i in heads else darknet_name), f"layer {i}"
            assert dataclasses.replace(b, activation=a.activation) == a
        else:
            assert a == b
    assert spec.net == base.net


def test_head_activations_stay_official():
    assert {build("yolov4-csp").layers[i - 1].activation for i in (144, 159, 174)} == {"logistic"}
    assert {build("yolov4", activation="mish").layers[i - 1].activation for i in (139, 150, 161)} == {"linear"}


def test_anchors_and_input_size_overrides():
    anchors = [(i + 1.0, 2.0 * i + 1) for i in range(6)]
    spec = build("yolov4-tiny", anchors=anchors, img_size=(320, 640))
    assert all(y.anchors == anchors for y in spec.yolo_layers)
    assert (spec.net.height, spec.net.width) == (320, 640)
    assert [y.mask for y in spec.yolo_layers] == [[3, 4, 5], [1, 2, 3]]  # masks keep the official order
    assert model_info(spec).layers[-1].out_chw == (255, 320 // 16, 640 // 16)


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(anchors=[(10, 14)] * 5), "needs 6 anchors"),
        (dict(anchors=[(10, 0)] * 6), "positive"),
        (dict(img_size=300), "multiple of 32"),
        (dict(activation="gelu"), "activation 'gelu'"),
    ],
)
def test_bad_builder_arguments_raise_cfg_error(kw, message):
    with pytest.raises(CfgError, match=message):
        build("yolov4-tiny", **kw)


def test_unknown_names_list_the_zoo(tmp_path):
    with pytest.raises(CfgError, match="yolov4-csp-leaky"):
        build("yolov5")
    with pytest.raises(CfgError, match="neither a zoo model .*yolov4x-mish"):
        resolve_spec("yolov5")
    with pytest.raises(CfgError, match="missing.cfg"):
        resolve_spec(tmp_path / "missing.cfg")


def test_resolve_spec_reads_cfgs_and_applies_overrides(tmp_path):
    path = dn.write_cfg(build("yolov4-tiny"), tmp_path / "tiny.cfg")
    assert resolve_spec(path).layers == build("yolov4-tiny").layers
    assert resolve_spec(str(path)).source == str(path)
    spec = resolve_spec(path, num_classes=3, img_size=320)
    assert spec.layers == build("yolov4-tiny", num_classes=3).layers
    assert (spec.net.height, spec.net.width) == (320, 320)
    zoo = resolve_spec("yolov4-tiny", num_classes=3, img_size=320)
    assert zoo.layers == spec.layers and zoo.net == spec.net


def test_set_num_classes_leaves_its_input_alone():
    spec = build("yolov3-tiny")
    before = copy.deepcopy(spec)
    out = set_num_classes(spec, 1)
    assert spec.layers == before.layers
    assert [y.classes for y in out.yolo_layers] == [1, 1] and out.layers[15].filters == 18


def test_load_model_runs_and_reloads_its_weights(tmp_path):
    model = load_model("yolov4-tiny", num_classes=3)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == model_info(model.spec).params
    x = torch.rand(1, 3, 128, 96)
    heads = model(x)
    assert [tuple(h.shape) for h in heads] == [(1, 24, 4, 3), (1, 24, 8, 6)]
    cfg = dn.write_cfg(model.spec, tmp_path / "m.cfg")
    weights = tmp_path / "m.weights"
    dn.save_weights(model, weights)
    again = load_model(cfg, weights)
    for a, b in zip(heads, again(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def official_weights_load(reference, tmp_path, name):
    """A .weights file written for the OFFICIAL cfg loads into the zoo model, same outputs."""
    official = dn.load(reference_spec(reference, name))
    torch.manual_seed(0)
    for module in official.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.running_mean, -0.1, 0.1)
            torch.nn.init.uniform_(module.running_var, 0.5, 2.0)
    weights = tmp_path / f"{name}.weights"
    dn.save_weights(official, weights)
    zoo = load_model(name, weights)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(official(x), zoo(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_official_weights_load_into_the_zoo_model(reference, tmp_path):
    official_weights_load(reference, tmp_path, "yolov4-tiny")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in OFFICIAL if n != "yolov4-tiny"])
def test_official_weights_load_into_the_big_zoo_models(reference, tmp_path, name):
    official_weights_load(reference, tmp_path, name)
