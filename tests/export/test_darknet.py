"""--format darknet: the written .cfg + .weights load in OpenCV DNN with PyTorch's outputs."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from yolo4.darknet import load, read_cfg
from yolo4.export import ExportOptions, export_model


def test_opencv_loads_export_with_equal_outputs(tiny, make_images, tmp_path):
    r = export_model(tiny, ExportOptions(format="darknet", img_size=(160, 160)), tmp_path / "tiny.cfg")
    cfg, weights = r.paths
    assert cfg.suffix == ".cfg" and weights == tmp_path / "tiny.weights"
    spec = read_cfg(cfg)
    assert (spec.net.height, spec.net.width) == (160, 160)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    x = make_images(1, (160, 160))
    net.setInput(x.numpy())
    heads = [i - 1 for i, layer in enumerate(spec.layers) if layer.KIND == "yolo"]  # the conv feeding each [yolo]
    got = net.forward([f"conv_{i}" for i in heads])
    with torch.no_grad():
        ref = tiny(x)
    for g, r_ in zip(got, ref):
        assert g.shape == tuple(r_.shape)
        assert np.abs(g - r_.numpy()).max() <= 1e-4
    reloaded = load(cfg, weights)  # and yolo4 reads its own export back
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(reloaded(x), ref))


def test_darknet_export_of_real_model_reloads(reference, tmp_path):
    models = reference / "models"
    model = load(models / "yolo-fastest-1.1.cfg", models / "yolo-fastest-1.1.weights")
    r = export_model(model, ExportOptions(format="darknet"), tmp_path / "fastest.cfg")
    assert r.paths[1].read_bytes()[20:] == (models / "yolo-fastest-1.1.weights").read_bytes()[20:]
