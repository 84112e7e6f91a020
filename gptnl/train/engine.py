"""The DeepSpeed engine for a model and a training config: ZeRO stage, precision, AdamW, schedule.

Everything DeepSpeed would otherwise default is written out: its `gradient_clipping` default is
1.0, so leaving the key out silently clips. The optimizer and schedule are the trainer core's
(`gptnl.trainer.optim`), passed in by us.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from gptnl.config import TrainConfig
from gptnl.trainer.optim import WarmupCosine, adamw


def deepspeed_config(cfg: TrainConfig, precision: str, world: int = 1, load_universal: bool = False) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch_size,
        "gradient_accumulation_steps": cfg.batch.accumulation(world),
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": False},
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build(deepspeed, model: torch.nn.Module, cfg: TrainConfig, precision: str, load_universal: bool = False):
    """(engine, scheduler) for `model`; the scheduler is stepped by the engine at each optimizer step."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    optimizer = adamw(model, cfg.optim)
    schedule = WarmupCosine.of(cfg.optim, cfg.max_steps)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: LambdaLR(opt, schedule),
        config=deepspeed_config(cfg, precision, world, load_universal),
    )
    return engine, scheduler
