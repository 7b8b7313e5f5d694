"""Fixtures of the training tests: a factory of fast TrainConfigs (the tiny shapes set, `tiny_data`,
is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from yolo4.training.config import TrainConfig


def _small_config(data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        model="yolov4-tiny",
        img_size=64,
        epochs=2,
        batch=8,
        burn_in=2,
        lr=0.01,
        workers=0,
        device="cpu",
        progress=False,
        out=str(out),
        mosaic=0.0,
        ema_tau=5.0,
        amp=False,  # bf16 autocast is slower than fp32 at 64 px; test_small_run turns it on
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def small_cfg():
    """`small_cfg(data, out, **overrides) -> TrainConfig`: a 2-epoch yolov4-tiny run at 64 px."""
    return _small_config
