"""AdamW and its schedule, the same for pre-training and fine-tuning."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gptnl.config import OptimConfig


@dataclass(frozen=True)
class WarmupCosine:
    """Multiplier on the peak lr: linear warmup from 0, then cosine to min_lr at max_steps."""

    warmup_steps: int
    max_steps: int
    min_ratio: float

    @classmethod
    def of(cls, optim: OptimConfig, max_steps: int) -> WarmupCosine:
        return cls(optim.warmup_steps, max_steps, optim.min_lr / optim.lr)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; norms (and any bias) are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """torch's AdamW over `model`'s trainable parameters: no JIT-compiled op on CPU, and under
    DeepSpeed the same result as plain DDP."""
    return torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas, eps=optim.eps)
