"""Pre-training and fine-tuning configs use the same names for the same things (batch, evaluation
interval, logging interval), and a config written with fine-tuning's old names gets told the new
ones instead of "unknown field"."""

from __future__ import annotations

import pytest
from conftest import ROOT

from gptnl.config import FinetuneConfig, TrainConfig, load_finetune_config, load_train_config
from gptnl.config.base import validate
from gptnl.errors import ConfigError
from gptnl.train.engine import deepspeed_config

SFT = ROOT / "configs" / "finetune" / "tiny-sft.yaml"
TRAIN = ROOT / "configs" / "train" / "tiny-cpu.yaml"


def test_the_shared_sections_have_the_same_fields():
    for section, fields in [("batch", {"micro_batch_size", "grad_accum_steps", "global_batch_size"}),
                            ("checkpoint", {"every", "keep_last", "integrity"}), ("optim", None)]:
        sft, pre = (set(cls.model_fields[section].annotation.model_fields) for cls in (FinetuneConfig, TrainConfig))
        assert sft == pre and (fields is None or sft == fields), section
    assert "every" in FinetuneConfig.model_fields["eval"].annotation.model_fields
    assert "log_every" in FinetuneConfig.model_fields["metrics"].annotation.model_fields
    assert {"eval_every", "log_every"}.isdisjoint(FinetuneConfig.model_fields)


def test_bundled_configs_read_with_the_shared_names():
    sft = load_finetune_config(SFT, ["eval.every=7", "metrics.log_every=3"])
    assert (sft.eval.every, sft.metrics.log_every) == (7, 3)
    pre = load_train_config(TRAIN, ["eval.every=7", "metrics.log_every=3"])
    assert (pre.eval.every, pre.metrics.log_every) == (7, 3)


@pytest.mark.parametrize(("old", "new"), [("eval_every", "eval.every"), ("log_every", "metrics.log_every")])
def test_an_old_finetune_name_is_told_the_new_one(old, new):
    with pytest.raises(ConfigError, match=rf"x.yaml: \(top level\): {old} is now {new}, the name pre-training"):
        validate(FinetuneConfig, {"max_steps": 3, old: 5}, "x.yaml")


def test_accumulation_is_given_or_derived_from_the_global_batch():
    pre = TrainConfig.model_fields["batch"].annotation
    assert pre(micro_batch_size=2).accumulation(4) == 1
    fixed_steps = pre(micro_batch_size=2, grad_accum_steps=3)
    assert [fixed_steps.global_batch(w) for w in (1, 2, 4)] == [6, 12, 24]  # grows with the processes
    fixed_batch = pre(micro_batch_size=2, global_batch_size=16)
    assert [fixed_batch.accumulation(w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert {fixed_batch.global_batch(w) for w in (1, 2, 4, 8)} == {16}
    with pytest.raises(ConfigError, match="global_batch_size 16 is not a multiple of micro_batch_size 2 x 3 processes"):
        fixed_batch.accumulation(3)
    with pytest.raises(ConfigError, match="batch: give grad_accum_steps or global_batch_size, not both"):
        validate(TrainConfig, {"max_steps": 1, "model": "m", "batch": {"grad_accum_steps": 2, "global_batch_size": 8}},
                 "x.yaml")


def test_finetuning_fixes_the_global_batch_unless_told_to_accumulate():
    assert FinetuneConfig(max_steps=1).batch.global_batch_size == 32
    accumulating = FinetuneConfig(max_steps=1, batch={"micro_batch_size": 2, "grad_accum_steps": 4})
    assert accumulating.batch.global_batch_size is None and accumulating.batch.global_batch(2) == 16


def test_a_global_batch_reaches_deepspeed_as_the_derived_accumulation():
    cfg = load_train_config(TRAIN, ["batch.grad_accum_steps=null", "batch.global_batch_size=32",
                                    "batch.micro_batch_size=4"])
    assert [deepspeed_config(cfg, "fp32", w)["gradient_accumulation_steps"] for w in (1, 2, 4)] == [8, 4, 2]
