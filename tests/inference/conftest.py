"""Fixtures for the inference tests (test_predict.py, test_detect.py): a tiny network cfg and
a runner that stands in for its network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_CFG = """
[net]
width=64
height=64
channels=3

[maxpool]
size=32
stride=32

[convolutional]
filters=7
size=1
stride=1
pad=0
activation=linear

[yolo]
mask=0
anchors=32,16, 10,10
classes=2
num=2
"""


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    """TINY_CFG in a file: a 64x64 input, one [yolo] head on a 2x2 grid, 2 classes."""
    p = tmp_path / "tiny.cfg"
    p.write_text(TINY_CFG)
    return p


def _fake_runner(x: torch.Tensor) -> list[torch.Tensor]:
    """One detection per image, at grid cell (y=0, x=1) of a 2x2 grid, class 1: in input
    pixels the box is centred (48, 16), anchor-sized 32x16 -> [32, 8, 64, 24]."""
    out = torch.full((x.shape[0], 7, 2, 2), -10.0)
    out[:, 0:4, 0, 1] = 0.0
    out[:, 4, 0, 1] = 5.0  # objectness
    out[:, 6, 0, 1] = 5.0  # class 1
    return [out]


@pytest.fixture
def fake_runner():
    """A `Detector` runner for tiny_cfg that returns `_fake_runner`'s fixed heads."""
    return _fake_runner
