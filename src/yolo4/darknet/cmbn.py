"""Cross mini-Batch Normalization (CmBN, YOLOv4 paper sec. 3.3): darknet's `batch_normalize=2`.

One optimizer step is one darknet "batch", split into `subdivisions` mini-batches. In training,
mini-batch k of a step is normalised with the statistics of mini-batches 1..k of that step:

    n_i    = B_i * H_i * W_i                       # values per channel in mini-batch i
    mean_k = sum_i n_i * mean_i / sum_i n_i        # i = 1..k
    var_k  = sum_i n_i * E_i[x^2] / sum_i n_i - mean_k^2   (>= 0)
    y      = (x - mean_k) / sqrt(var_k + eps) * weight + bias

That is BatchNorm over the concatenation of mini-batches 1..k, read at mini-batch k's rows.
Darknet's mini-batches all have the same size, so its plain average over mini-batches is the
same number; weighting by the value count is what makes unequal mini-batches (a last, short
one) agree with BatchNorm over their union. Earlier mini-batches enter as constants (their
graphs were freed by their own backward); mini-batch k's statistics are differentiable.

    model = Darknet(spec)               # [convolutional] batch_normalize=2 -> CmBatchNorm2d
    for step in range(steps):
        reset_cmbn(model)               # a new step: forget the previous step's mini-batches
        for images, targets in mini_batches(step):
            loss_fn(model(images), targets).backward()
        optimizer.step(); optimizer.zero_grad()

Without `reset_cmbn` the accumulation never ends and the statistics drift towards those of
every mini-batch since the last reset. In eval mode the layer is nn.BatchNorm2d (same
parameters, buffers and state_dict keys, so darknet .weights and exporters see plain BN).
Being a BatchNorm2d, it is also what `nn.SyncBatchNorm.convert_sync_batchnorm` replaces by a
plain SyncBatchNorm: CmBN is a single-process (per-process) feature.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CmBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics accumulate over the mini-batches of one step.

    Input and output: Tensor[B, C, H, W] (any memory format; the output keeps the input's
    dtype). Statistics are float32, also under autocast: mini-batch 1 of a step runs
    BatchNorm2d's own kernel, later ones normalise a float32 copy of the input.

    Accumulator (not in the state_dict; cleared by `reset_accumulation` / `reset_cmbn`):
        acc_count: int, values per channel seen this step (sum of B*H*W)
        acc_mean: Tensor[C] float32 or None, their mean
        acc_m2: Tensor[C] float32 or None, their sum of squared deviations from acc_mean
    (count, mean, M2) is Chan et al.'s parallel form of (mean, E[x^2]): the same variance as
    darknet's E[x^2] - mean^2, without the float32 cancellation of that difference when
    |mean| >> std.

    Running statistics are updated after every training mini-batch with the accumulated
    mean and unbiased variance (var_k * N / (N - 1), N = acc_count) and the layer's
    momentum, so that the first mini-batch of a step updates them exactly as BatchNorm2d.
    """

    acc_count: int
    acc_mean: Tensor | None
    acc_m2: Tensor | None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_accumulation()

    def reset_accumulation(self) -> None:
        """Forget the mini-batches seen so far (call at the start of each optimizer step)."""
        self.acc_count, self.acc_mean, self.acc_m2 = 0, None, None

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[B, C, H, W]. Returns Tensor[B, C, H, W] of x's dtype."""
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        n_b = x.numel() // x.shape[1]  # values per channel in this mini-batch
        if self.acc_count == 0:  # first mini-batch of a step: exactly BatchNorm2d
            out = super().forward(x)
            with torch.no_grad():
                var_b, mean_b = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)  # (C,), (C,)
            self.acc_count, self.acc_mean, self.acc_m2 = n_b, mean_b, var_b * n_b
            return out
        x32 = x.float()
        var_b, mean_b = torch.var_mean(x32, dim=(0, 2, 3), correction=0)  # (C,), (C,) differentiable
        n_a = self.acc_count
        n = n_a + n_b
        assert self.acc_mean is not None and self.acc_m2 is not None  # set by the step's first mini-batch
        mean_a, m2_a = self.acc_mean.to(x.device), self.acc_m2.to(x.device)  # (C,) constants
        delta = mean_b - mean_a
        mean = mean_a + delta * (n_b / n)
        var = (m2_a + var_b * n_b + delta * delta * (n_a * n_b / n)) / n
        self.acc_count, self.acc_mean, self.acc_m2 = n, mean.detach(), var.detach() * n
        self._update_running(mean.detach(), var.detach() * (n / (n - 1)))
        scale = torch.rsqrt(var + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight.float()
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.float()
        y = x32 * scale[:, None, None] + shift[:, None, None]  # (B, C, H, W) float32
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        """running = (1 - f) * running + f * accumulated, f = momentum (or 1/count when None)."""
        if not self.track_running_stats or self.running_mean is None or self.running_var is None:
            return
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), f)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), f)


def reset_cmbn(model: nn.Module) -> int:
    """Clear the accumulator of every CmBatchNorm2d in `model` (call before the first
    mini-batch of each optimizer step). Returns how many layers were reset."""
    layers = [m for m in model.modules() if isinstance(m, CmBatchNorm2d)]
    for m in layers:
        m.reset_accumulation()
    return len(layers)
