"""Shared fixtures. `reference` points at ../shared/reference (read-only public data); tests
that need it skip with a reason when it is absent, as on a user's fresh clone.

YOLO4_REFERENCE=/path uses another copy; YOLO4_REFERENCE=none hides it, to check what a fresh
clone runs: `YOLO4_REFERENCE=none python -m pytest tests/darknet`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per xdist worker: PyTorch's OpenMP threads busy-wait, so 2 workers x 2 threads on
    # 2 cores run several times slower than 2 x 1
    import torch

    torch.set_num_threads(1)

REFERENCE = Path(
    os.environ.get("YOLO4_REFERENCE") or Path(__file__).resolve().parents[1].parent / "shared" / "reference"
)
KANGAROO = REFERENCE.parent / "datasets" / "kangaroo"


@pytest.fixture(scope="session")
def reference() -> Path:
    if os.environ.get("YOLO4_REFERENCE", "").lower() == "none":
        pytest.skip("reference data hidden (YOLO4_REFERENCE=none)")
    if not (REFERENCE / "README.md").is_file():
        pytest.skip(f"reference data not found at {REFERENCE} (only present in the project's workspace)")
    return REFERENCE


@pytest.fixture(scope="session")
def kangaroo() -> Path:
    """The shared real dataset (164 photos, VOC xml, ImageSets/Main split), read-only."""
    if not (KANGAROO / "ImageSets" / "Main" / "train.txt").is_file():
        pytest.skip(f"the kangaroo dataset was not found at {KANGAROO} (only present in the project's workspace)")
    return KANGAROO


SMALL_CFG = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


@pytest.fixture(scope="session")
def small_cfg_text() -> str:
    """The darknet cfg of the smallest useful network, for exported, weights and metadata files: a
    64x64 input, a batch-normalised 3x3 convolution, one [yolo] head on a 32x32 grid, 2 classes."""
    return SMALL_CFG


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu") is not None:  # (not `keywords`: it holds folder names too)
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """16 train / 4 val shapes images of 64 px with 1-3 objects each (read-only: tests share it)."""
    from yolo4.data.shapes import ShapesConfig, make_shapes

    root = tmp_path_factory.mktemp("shapes")
    cfg = ShapesConfig(num_train=16, num_val=4, img_size=64, size_range=(10, 32), num_objects=(1, 3))
    return make_shapes(root / "shapes", cfg, workers=0, progress=False)
