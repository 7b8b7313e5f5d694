"""`yolo4 train`: the command's entry point (the demo or one training run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.training.train import TrainResult, train


def run_train(demo: bool = False, options: Sequence[str] = (), **given: Any) -> TrainResult | dict:
    """`yolo4 train`: a TrainConfig from the given values (None: default) and `KEY=VALUE`
    options, then `train`; with demo=True the main job (`yolo4.training.demo.run_demo`)."""
    if demo:
        from yolo4.training.demo import run_demo

        return run_demo(given.get("out") or "runs/demo", device=given.get("device") or "auto")
    cfg = TrainConfig.from_args(list(options))
    for k, v in given.items():
        if v is not None:
            setattr(cfg, k, v)
    if not cfg.resume and not cfg.data:
        raise Yolo4Error("give --data DATA (or --resume RUN, or --demo)")
    return train(cfg)
