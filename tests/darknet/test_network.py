"""The PyTorch module against OpenCV DNN, an independent darknet implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import yolo4.darknet as dn
from yolo4.darknet.network import Conv
from yolo4.errors import CfgError
from yolo4.models.zoo import build

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromDarknet"):  # opencv 5 dropped the darknet reader
    pytest.skip("OpenCV without a darknet reader (need opencv-python-headless<5)", allow_module_level=True)


def randomize(model: dn.Darknet, seed: int = 0) -> None:
    """Weights and BN statistics that keep activations O(1) through deep networks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            if not isinstance(block, Conv):
                continue
            w = block.conv.weight
            w.copy_(torch.randn(w.shape, generator=g) / w[0].numel() ** 0.5)
            if isinstance(block.bn, torch.nn.BatchNorm2d):
                bn = block.bn
                for t, lo, hi in (
                    (bn.weight, 0.5, 1.0),
                    (bn.bias, -0.2, 0.2),
                    (bn.running_mean, -0.1, 0.1),
                    (bn.running_var, 0.5, 2.0),
                ):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
            else:
                block.conv.bias.copy_(torch.rand(block.conv.bias.shape, generator=g) * 0.4 - 0.2)


def opencv_heads(cfg_path, weights_path, model: dn.Darknet, x: np.ndarray) -> list[np.ndarray]:
    """The tensors OpenCV feeds its [yolo] layers (its layer names: conv_N, logistic_{N+1})."""
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setInput(x)
    names = []
    for i in model.head_indices:
        feeder = model.spec.layers[i - 1]
        names.append(f"logistic_{i}" if feeder.activation == "logistic" else f"conv_{i - 1}")
    return net.forward(names)


@pytest.mark.parametrize(
    "name,size", [("yolov4", 256), ("yolov4-tiny", 416), ("yolov4-csp", 256), ("yolov3", 256), ("yolov3-tiny", 320)]
)
def test_random_weights_match_opencv(tmp_path, name, size):
    spec = build(name, img_size=size)  # the zoo builds the official cfgs (tests/models/test_zoo.py)
    model = dn.Darknet(spec).eval()
    randomize(model)
    cfg, weights = tmp_path / "m.cfg", tmp_path / "m.weights"
    dn.write_cfg(spec, cfg)
    dn.save_weights(model, weights)
    x = np.random.default_rng(1).random((1, 3, size, size), dtype=np.float32)
    expected = opencv_heads(cfg, weights, model, x)
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    assert len(got) == len(expected) == len(spec.yolo_layers)
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        assert np.abs(g.numpy() - e).max() <= 1e-4


def test_real_coco_model_matches_opencv(reference):
    import cv2 as _cv2

    cfg = reference / "models" / "yolo-fastest-1.1.cfg"
    weights = reference / "models" / "yolo-fastest-1.1.weights"
    model = dn.load(cfg, weights)
    img = _cv2.cvtColor(_cv2.imread(str(reference / "images" / "dog.jpg")), _cv2.COLOR_BGR2RGB)
    x = _cv2.resize(img, (320, 320)).astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    spec = model.spec
    spec.net.width = spec.net.height = 320
    model = dn.load(spec, weights)
    expected = opencv_heads(cfg, weights, model, x)
    with torch.no_grad():
        got = model(torch.from_numpy(np.ascontiguousarray(x)))
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        assert np.abs(g.numpy() - e).max() <= 1e-4
    # a trained model gives confident objectness somewhere: this is a real detector, not noise
    assert max(torch.sigmoid(g[:, 4::85]).max().item() for g in got) > 0.8


def test_forward_contract_and_input_size():
    spec = build("yolov4-tiny")
    model = dn.Darknet(spec).eval()
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 160, 224))  # any multiple of 32, (H, W)
    assert [tuple(o.shape) for o in outs] == [(2, 255, 5, 7), (2, 255, 10, 14)]


def new_coords_cfg(small_cfg_text: str, act: str) -> str:
    """The small cfg with its [yolo] head in the Scaled-YOLOv4 style (new_coords=1, scale_x_y=2)."""
    head = small_cfg_text.replace("activation=linear", f"activation={act}")
    return head.rstrip() + "\nscale_x_y=2.0\nnew_coords=1\n"


def test_new_coords_head_gives_logits_in_training_and_probabilities_at_inference(small_cfg_text):
    model = dn.Darknet(dn.parse_cfg(new_coords_cfg(small_cfg_text, "logistic")))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        (probs,) = model.eval()(x)
        model.train()
        model.blocks[0].bn.eval()  # the stem's BatchNorm normalises as in the eval pass
        (logits,) = model(x)
    assert logits.min() < 0 and logits.max() > 0  # logits, not probabilities
    torch.testing.assert_close(torch.sigmoid(logits), probs)


def test_new_coords_head_without_a_logistic_conv_is_refused(small_cfg_text):
    with pytest.raises(CfgError, match="new_coords=1 must follow .* activation=logistic"):
        dn.Darknet(dn.parse_cfg(new_coords_cfg(small_cfg_text, "linear")))


def test_maxpool_matches_darknet_rule():
    from yolo4.darknet.layers import MaxPool
    from yolo4.darknet.network import MaxPoolDarknet

    x = torch.randn(1, 2, 13, 13)
    for size, stride in [(2, 2), (2, 1), (5, 1), (9, 1), (3, 2)]:
        layer = MaxPool(size=size, stride=stride)
        out = MaxPoolDarknet(layer)(x, [])
        pad = layer.pad_total
        n = (13 + pad - size) // stride + 1
        assert out.shape[-1] == n
        # brute force: max over valid pixels of each window, offset -pad//2
        for oy in range(n):
            for ox in range(n):
                y0, x0 = oy * stride - pad // 2, ox * stride - pad // 2
                win = x[..., max(y0, 0) : y0 + size, max(x0, 0) : x0 + size]
                assert torch.equal(out[..., oy, ox], win.amax(dim=(-1, -2)))


def test_reorg3d_matches_darknet_loop():
    from yolo4.darknet.layers import Reorg3d
    from yolo4.darknet.network import SpaceToDepth

    b, c, h, w, s = 1, 3, 4, 6, 2
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)
    out = SpaceToDepth(Reorg3d(stride=s))(x, [])
    flat_in, ref = x.flatten(), torch.empty(b * c * h * w)
    ow, oh, oc = w // s, h // s, c * s * s
    for k in range(oc):  # darknet's reorg_cpu(..., forward=0)
        for j in range(oh):
            for i in range(ow):
                c2, offset = k % c, k // c
                w2, h2 = i * s + offset % s, j * s + offset // s
                ref[i + ow * (j + oh * k)] = flat_in[w2 + w * (h2 + h * c2)]
    assert torch.equal(out.flatten(), ref)


def test_route_groups_and_attention_layers():
    text = """
[net]
width=32
height=32
channels=3
[convolutional]
filters=8
size=3
pad=1
activation=leaky
[route]
layers=-1
groups=2
group_id=1
[convolutional]
filters=8
size=1
activation=logistic
[sam]
from=-3
[maxpool]
size=32
stride=32
padding=0
[convolutional]
filters=8
size=1
activation=logistic
[scale_channels]
from=-3
"""
    spec = dn.parse_cfg(text)
    model = dn.Darknet(spec).eval()
    assert [i.out_chw for i in model.infos] == [
        (8, 32, 32),
        (4, 32, 32),
        (8, 32, 32),
        (8, 32, 32),
        (8, 1, 1),
        (8, 1, 1),
        (8, 32, 32),
    ]
    x = torch.rand(1, 3, 32, 32)
    b = model.blocks
    with torch.no_grad():
        c0 = b[0](x, [])
        half = c0[:, 4:]
        c2 = b[2](half, [])
        sam = c2 * c0
        pooled = sam.amax(dim=(-1, -2), keepdim=True)
        c5 = b[5](pooled, [])
        expected = sam * c5
        saved = {}
        y = x
        for i, blk in enumerate(b):  # the module keeps only what later layers read
            y = blk(y, [saved[j] for j in model.sources[i]])
            saved[i] = y
    assert torch.allclose(saved[6], expected, atol=1e-6)


def test_export_sees_a_static_graph():
    """No data-dependent control flow: torch.export captures the whole forward."""
    spec = build("yolov4-tiny")
    model = dn.Darknet(spec).eval()
    x = torch.rand(1, 3, 96, 96)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        for a, b in zip(ep.module()(x), model(x)):
            assert torch.allclose(a, b, atol=1e-5)
