"""Learning-rate schedules built from torch's own schedulers, stepped every optimizer step."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)

__all__ = ["constant", "cosine", "linear", "multistep"]


def _with_warmup(optimizer: Optimizer, main: LRScheduler, warmup_steps: int,
                 warmup_factor: float) -> LRScheduler:
    if warmup_steps <= 0:
        return main
    warm = LinearLR(optimizer, start_factor=warmup_factor, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    return min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))


def cosine(optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
           warmup_factor: float = 0.01, min_lr_ratio: float = 0.01) -> LRScheduler:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` x the base rate at the last step."""
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    base = min(g["lr"] for g in optimizer.param_groups)
    main = CosineAnnealingLR(optimizer, T_max=max(total_steps - warm, 1), eta_min=base * min_lr_ratio)
    return _with_warmup(optimizer, main, warm, warmup_factor)


def multistep(optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int,
              milestones: Sequence[float] = (0.67, 0.89), gamma: float = 0.1, warmup_epochs: float = 0.0,
              warmup_factor: float = 0.01) -> LRScheduler:
    """Step decay by ``gamma`` at milestones given in epochs (>= 1) or as fractions of training (< 1)."""
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    steps = [int(m * total_steps) if m < 1 else int(m * steps_per_epoch) for m in milestones]
    main = MultiStepLR(optimizer, milestones=[max(s - warm, 1) for s in steps], gamma=gamma)
    return _with_warmup(optimizer, main, warm, warmup_factor)


def linear(optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
           warmup_factor: float = 0.01, end_factor: float = 0.0) -> LRScheduler:
    """Linear warmup, then linear decay to ``end_factor`` x the base rate."""
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    main = LinearLR(optimizer, start_factor=1.0, end_factor=max(end_factor, 1e-8),
                    total_iters=max(total_steps - warm, 1))
    return _with_warmup(optimizer, main, warm, warmup_factor)


def constant(optimizer: Optimizer, *, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
             warmup_factor: float = 0.01) -> LRScheduler:
    """Linear warmup, then the base rate."""
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    return _with_warmup(optimizer, ConstantLR(optimizer, factor=1.0, total_iters=0), warm, warmup_factor)
