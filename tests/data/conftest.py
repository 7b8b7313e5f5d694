"""Fixtures for the data tests: a small shapes dataset, and a private cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolo4.data.shapes import ShapesConfig, make_shapes


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Nothing a data test does may write to ~/.cache."""
    monkeypatch.setenv("YOLO4_CACHE_DIR", str(tmp_path / "yolo4-cache"))


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory) -> Path:
    """A 40 + 20 image shapes dataset (YOLO txt); returns its data.yaml."""
    return make_shapes(
        tmp_path_factory.mktemp("shapes") / "shapes", ShapesConfig(num_train=40, num_val=20), progress=False
    )
