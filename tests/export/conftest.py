"""Shared helpers for the export tests: small random networks with realistic BN statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from yolo4.darknet import Darknet
from yolo4.models import load_model


def randomize_bn(model: Darknet, seed: int = 0) -> Darknet:
    """Give every BatchNorm non-trivial running statistics and affine terms (in place), so a
    random network's activations span a realistic range instead of collapsing to ~0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.05)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def small_model(name: str, img_size: int = 128, num_classes: int = 3, seed: int = 0) -> Darknet:
    """A zoo model with random weights (seeded) at a small input size, eval mode."""
    torch.manual_seed(seed)
    return randomize_bn(load_model(name, num_classes=num_classes, img_size=img_size), seed)


@pytest.fixture(scope="module")
def tiny() -> Darknet:
    return small_model("yolov4-tiny")


def random_images(n: int, hw: tuple[int, int], seed: int = 5) -> torch.Tensor:
    """(n, 3, H, W) float in [0, 1] quantised to k/255 like real pixels."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, *hw)).astype(np.float32) / 255.0)


@pytest.fixture(scope="session")
def make_model():
    """`make_model(name, img_size=128, num_classes=3, seed=0)` -> a seeded random Darknet."""
    return small_model


@pytest.fixture(scope="session")
def with_realistic_bn():
    """`with_realistic_bn(model, seed=0)` -> `model` with realistic BN statistics (`randomize_bn`, in place)."""
    return randomize_bn


@pytest.fixture(scope="session")
def make_images():
    """`make_images(n, (H, W), seed=5)` -> (n, 3, H, W) pixels / 255."""
    return random_images
