"""`yolo4 train`: the command's entry point (the demo or one training run)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from yolo4.errors import Yolo4Error
from yolo4.training.config import TrainConfig
from yolo4.training.train import TrainResult, train

# all that `train --demo` takes; it refuses the rest rather than ignore it
DEMO_SETTINGS = ("out", "device", "time_budget_min")


def _flag(name: str) -> str:
    return "--set" if name == "options" else f"--{name.replace('_', '-')}"


def run_train(
    data: str | os.PathLike | None = None,
    *,
    demo: bool = False,
    options: Sequence[str] = (),
    config: TrainConfig | str | os.PathLike | None = None,
    **settings: Any,
) -> TrainResult | dict:
    """`yolo4 train`: a TrainConfig, then `train`; with demo=True the main job
    (`yolo4.training.demo.run_demo`).

    Args:
        data: the dataset (folder, data.yaml, darknet .data, COCO .json): TrainConfig.data.
        demo: train the README's demo; it takes only `out`, `device` and `time_budget_min` (its
            training budget on a CPU) and raises Yolo4Error naming anything else it was given,
            rather than ignore it.
        options: `KEY=VALUE` strings (`--set`), applied first.
        config: the TrainConfig to start from, or a YAML file of its fields (`--config`, e.g. the
            best.yaml of `yolo4 tune`); default TrainConfig().
        settings: TrainConfig fields by name (model, epochs, batch, lr, ...), applied last;
            None leaves a field as it is. An unknown name raises Yolo4Error.
    Returns:
        the TrainResult (the demo: its summary dict).
    """
    if demo:
        given = {"data": data, "options": list(options) or None, "config": config, **settings}
        ignored = [_flag(k) for k, v in given.items() if v is not None and k not in DEMO_SETTINGS]
        if ignored:
            raise Yolo4Error(
                "train --demo trains its own recipe (yolov4-tiny on the embedded shapes data) and takes only "
                f"--out, --device and --time-budget; it would ignore {', '.join(ignored)}: drop them, or train "
                "without --demo"
            )
        from yolo4.training.demo import run_demo

        return run_demo(
            settings.get("out") or "runs/demo",
            device=settings.get("device") or "auto",
            minutes=settings.get("time_budget_min"),
        )
    known = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise Yolo4Error(f"unknown training setting {', '.join(unknown)} (TrainConfig fields: {', '.join(known)})")
    if config is not None and not isinstance(config, TrainConfig):
        config = TrainConfig.from_yaml(config)
    cfg = TrainConfig.from_args(list(options), base=config)
    if data is not None:
        cfg.data = os.fspath(data)
    for k, v in settings.items():
        if v is not None:
            setattr(cfg, k, os.fspath(v) if isinstance(v, os.PathLike) else v)
    if not cfg.resume and not cfg.data:
        raise Yolo4Error("give --data DATA (or --resume RUN, or --demo)")
    return train(cfg)
