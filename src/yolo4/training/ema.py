"""Exponential moving average of a model's weights (and BN buffers).

    ema = ModelEMA(model, decay=0.9999, tau=2000)
    ...
    optimizer.step(); ema.update(model)
    evaluate(ema.module)

The decay ramps up as `decay * (1 - exp(-updates / tau))`, so the average follows the
weights closely at the start of training and smooths them later.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class ModelEMA:
    """EMA copy of `model` (kept in eval mode, no gradients). `state_dict`/`load_state_dict`
    hold the averaged weights and the update count, for checkpoints."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), int(updates)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return self.decay * (1 - math.exp(-(self.updates + 1) / self.tau)) if self.tau > 0 else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = d * ema + (1 - d) * model for float tensors; integer buffers are copied."""
        d = self.current_decay()
        self.updates += 1
        src = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
