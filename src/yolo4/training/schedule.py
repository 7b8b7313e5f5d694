"""Learning-rate schedules as pure functions of the optimizer step.

    lr = lr_at(step, base_lr=0.01, total_steps=10_000, schedule=ScheduleConfig(policy="cosine"))

A schedule is a pure function, so resuming needs only the step count. darknet's burn-in
(`lr * (step / burn_in) ** power`, power 4) comes first, then one of:

* `steps`: multiply by `scales[i]` once `step >= steps[i]` (darknet `policy=steps`);
* `cosine`: one half cosine from `lr` to `lr * final_ratio` over the remaining steps;
* `sgdr`: cosine with warm restarts (darknet `policy=sgdr`): cycles of `sgdr_cycle` steps,
  each `sgdr_mult` times longer than the last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

POLICIES = ("steps", "cosine", "sgdr", "constant")


@dataclass(frozen=True)
class ScheduleConfig:
    """One learning-rate schedule. Step counts are optimizer steps; `steps` may be given as
    fractions of the total (values < 1) or absolute step numbers."""

    policy: str = "cosine"
    burn_in: int = 1000
    burn_in_power: float = 4.0
    steps: tuple[float, ...] = (0.8, 0.9)
    scales: tuple[float, ...] = (0.1, 0.1)
    final_ratio: float = 0.01  # cosine / sgdr: lr at the end of a cycle, relative to the base
    sgdr_cycle: int = 1000
    sgdr_mult: float = 2.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown lr policy '{self.policy}' (choose from {', '.join(POLICIES)})")
        if len(self.steps) != len(self.scales):
            raise ValueError(f"{len(self.steps)} steps but {len(self.scales)} scales")
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in}")


def burn_in_factor(step: int, burn_in: int, power: float = 4.0) -> float:
    """darknet's warm-up multiplier: (step / burn_in) ** power while step < burn_in, else 1."""
    if burn_in <= 0 or step >= burn_in:
        return 1.0
    return (step / burn_in) ** power


def step_factor(step: int, steps: Sequence[float], scales: Sequence[float], total_steps: int) -> float:
    """darknet `policy=steps`: the product of scales[i] over every boundary steps[i] <= step
    (a boundary < 1 is a fraction of total_steps)."""
    f = 1.0
    for s, k in zip(steps, scales):
        boundary = s * total_steps if s < 1 else s
        if step >= boundary:
            f *= k
    return f


def cosine_factor(step: int, start: int, total_steps: int, final_ratio: float) -> float:
    """Half cosine from 1 at `start` to `final_ratio` at `total_steps`."""
    span = max(total_steps - start, 1)
    t = min(max(step - start, 0) / span, 1.0)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def sgdr_factor(step: int, start: int, cycle: int, mult: float, final_ratio: float) -> float:
    """Cosine with warm restarts (Loshchilov & Hutter): cycles of cycle, cycle*mult, ... steps."""
    t, length = float(max(step - start, 0)), float(max(cycle, 1))
    while t >= length:
        t -= length
        length *= mult
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t / length))


def lr_at(step: int, base_lr: float, total_steps: int, schedule: ScheduleConfig) -> float:
    """The learning rate at optimizer step `step` (0-based) of `total_steps`."""
    warm = burn_in_factor(step, schedule.burn_in, schedule.burn_in_power)
    if schedule.policy == "steps":
        f = step_factor(step, schedule.steps, schedule.scales, total_steps)
    elif schedule.policy == "cosine":
        f = cosine_factor(step, schedule.burn_in, total_steps, schedule.final_ratio)
    elif schedule.policy == "sgdr":
        f = sgdr_factor(step, schedule.burn_in, schedule.sgdr_cycle, schedule.sgdr_mult, schedule.final_ratio)
    else:
        f = 1.0
    return base_lr * warm * f
