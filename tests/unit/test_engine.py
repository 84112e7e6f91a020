"""DeepSpeed settings that must be explicit, and the learning-rate schedule."""

import pytest
from conftest import TINY_MODEL

from gptnl.config import TrainConfig, load_model_config
from gptnl.train.engine import deepspeed_config
from gptnl.trainer.optim import WarmupCosine


def cfg(**kw):
    return TrainConfig(model=load_model_config(TINY_MODEL), max_steps=100, **kw)


def test_gradient_clipping_is_always_written():
    """DeepSpeed clips at 1.0 when the key is missing; 0 must reach it as 0."""
    c = cfg(optim={"grad_clip": 0.0})
    assert deepspeed_config(c, "fp32")["gradient_clipping"] == 0.0
    assert deepspeed_config(cfg(), "bf16")["bf16"] == {"enabled": True}


def test_zero_stage_and_batch_reach_deepspeed():
    c = cfg(zero_stage=3, batch={"micro_batch_size": 2, "grad_accum_steps": 4})
    ds = deepspeed_config(c, "fp32")
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 4


def test_warmup_then_cosine_to_min():
    s = WarmupCosine(warmup_steps=10, max_steps=110, min_ratio=0.1)
    assert s(0) == pytest.approx(1 / 11)
    assert s(9) < s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    assert all(s(i) >= s(i + 1) for i in range(10, 120))
