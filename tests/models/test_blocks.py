"""The layer-emitting pieces of the zoo, checked by shape inference and by their references."""

from __future__ import annotations

import pytest

from yolo4.darknet.layers import Convolutional, NetOptions, NetworkSpec, Route
from yolo4.darknet.network import infer_shapes
from yolo4.models import blocks


def shapes(layers, hw=(64, 64)):
    """Output (C, H, W) of the last layer and every layer's absolute sources."""
    spec = NetworkSpec(NetOptions(width=hw[1], height=hw[0]), layers)
    infos = infer_shapes(spec)
    return infos[-1].out_chw, [info.sources for info in infos]


@pytest.mark.parametrize("n", [1, 2, 8])
def test_csp_stage_splits_and_rejoins(n):
    layers = [blocks.conv(32, 3, 1, "mish")] + blocks.csp_stage(64, n, "mish")
    assert len(layers) == 1 + 3 * n + 7
    out, sources = shapes(layers)
    assert out == (64, 32, 32)
    # the concat joins the last conv of the residual path with the bypass conv (layer 2)
    concat = len(layers) - 2
    assert sources[concat] == (concat - 1, 2)
    assert sources[3] == (1,)  # part 2 restarts from the downsampling conv


def test_csp_stage_first_yolov4_stage_widths():
    layers = blocks.csp_stage(64, 1, "mish", split=64, hidden=32)
    filters = [layer.filters for layer in layers if isinstance(layer, Convolutional)]
    assert filters == [64, 64, 64, 32, 64, 64, 64]


def test_darknet_stage_is_residual_units():
    layers = [blocks.conv(32, 3, 1, "leaky")] + blocks.darknet_stage(64, 2, "leaky")
    out, sources = shapes(layers)
    assert out == (64, 32, 32)
    assert [layer.KIND for layer in layers[2:5]] == ["convolutional", "convolutional", "shortcut"]
    assert sources[4] == (1,) and sources[7] == (4,)


@pytest.mark.parametrize("sizes,expected", [((5, 9, 13), [-1, -3, -5, -6]), ((5, 9), [-1, -3, -4]), ((5,), [-1, -2])])
def test_spp_concatenates_largest_pool_first_then_the_input(sizes, expected):
    layers = [blocks.conv(16, 3, 1, "leaky")] + blocks.spp(sizes)
    assert layers[-1].layers == expected
    out, sources = shapes(layers, (16, 16))
    assert out == (16 * (len(sizes) + 1), 16, 16)
    pools = [i for i, layer in enumerate(layers) if layer.KIND == "maxpool"]
    assert sources[-1] == (*reversed(pools), 0)
    assert [layers[i].size for i in pools] == list(sizes)


def test_references_are_shifted_inside_a_block():
    # refs are relative to the block's first layer: the route at offset 2 sees skip=-14 as -16
    layers = blocks.pan_downsample(256, source=-4, skip=-14, activation="leaky")
    assert [layer.layers for layer in layers if isinstance(layer, Route)] == [[-4], [-1, -16]]
    # absolute indices (backbone taps) stay as they are
    layers = blocks.upsample_concat(128, source=-4, lateral=23, activation="leaky")
    assert layers[-1].layers == [-1, 23]
    assert blocks.pan_upsample(256, 85, "leaky")[2].layers == [85]
    assert blocks.pan_upsample(256, -5, "leaky")[2].layers == [-7]


def test_csp_tiny_stage_shape_and_group_route():
    layers = [blocks.conv(64, 3, 1, "leaky")] + blocks.csp_tiny_stage(64, "leaky")
    out, _ = shapes(layers)
    assert out == (128, 32, 32)
    assert (layers[2].groups, layers[2].group_id) == (2, 1)


def test_csp_spp_and_csp_conv_stack_route_back_to_their_bypass():
    for pairs in (1, 2):
        layers = [blocks.conv(64, 1, 1, "mish")] + blocks.csp_spp(32, "mish", pairs_after=pairs)
        out, sources = shapes(layers, (8, 8))
        assert out == (32, 8, 8)
        assert sources[-2] == (len(layers) - 3, 1)
        layers = [blocks.conv(64, 1, 1, "mish")] + blocks.csp_conv_stack(32, pairs, "mish")
        out, sources = shapes(layers, (8, 8))
        assert out == (32, 8, 8)
        assert sources[-2] == (len(layers) - 3, 2)


def test_conv_stack_alternates_1x1_and_3x3():
    layers = blocks.conv_stack(128, 5, "leaky")
    assert [(c.filters, c.size) for c in layers] == [(128, 1), (256, 3), (128, 1), (256, 3), (128, 1)]


def test_yolo_head_prediction_conv_matches_the_yolo_layer():
    head = blocks.yolo([0, 1, 2], [(1, 2)] * 9, 3, scale_x_y=2.0)
    conv3, pred, yolo = blocks.yolo_head(256, head, "mish", head_activation="logistic")
    assert (conv3.filters, conv3.size, conv3.activation) == (256, 3, "mish")
    assert (pred.filters, pred.batch_normalize, pred.activation) == (3 * 8, 0, "logistic")
    assert yolo is head and head.num == 9 and head.channels == 24


def test_blocks_return_fresh_layers():
    a, b = blocks.csp_stage(64, 1, "mish"), blocks.csp_stage(64, 1, "mish")
    a[0].filters = 1
    a[-2].layers.append(5)
    assert b[0].filters == 64 and b[-2].layers == [-1, -7]
