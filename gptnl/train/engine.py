"""The DeepSpeed engine for a model and a training config: ZeRO stage, precision, AdamW, schedule.

Everything DeepSpeed would otherwise default is written out: its `gradient_clipping` default is
1.0, so leaving the key out silently clips. The optimizer is torch's AdamW passed in by us, which
needs no JIT-compiled op on CPU and gives the same result as plain DDP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from gptnl.config import TrainConfig


@dataclass(frozen=True)
class WarmupCosine:
    """Multiplier on the peak lr: linear warmup from 0, then cosine to min_lr at max_steps."""

    warmup_steps: int
    max_steps: int
    min_ratio: float

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


def deepspeed_config(cfg: TrainConfig, precision: str, load_universal: bool = False) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch_size,
        "gradient_accumulation_steps": cfg.batch.grad_accum_steps,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; norms (and any bias) are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build(deepspeed, model: torch.nn.Module, cfg: TrainConfig, precision: str, load_universal: bool = False):
    """(engine, scheduler) for `model`; the scheduler is stepped by the engine at each optimizer step."""
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps)
    schedule = WarmupCosine(o.warmup_steps, cfg.max_steps, o.min_lr / o.lr)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: LambdaLR(opt, schedule),
        config=deepspeed_config(cfg, precision, load_universal),
    )
    return engine, scheduler
