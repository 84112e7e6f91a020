"""Instruction tuning: method (full, LoRA), batch, the data gates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from gptnl.config.base import ConfigPath, Strict, apply_overrides, read_yaml, source_label, validate
from gptnl.config.data import DecontaminationStep, PiiStep
from gptnl.config.train import BatchConfig, CheckpointConfig, OptimConfig


class LoraSettings(Strict):
    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1)


class SftBatch(BatchConfig):
    """The pre-training batch fields; by default a fixed global batch (32 conversations per step),
    so 1 and N processes take the same steps on the same conversations."""

    micro_batch_size: int = Field(default=4, gt=0, description="conversations per process per forward pass")

    @model_validator(mode="before")
    @classmethod
    def _default_global(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("grad_accum_steps") is None and data.get("global_batch_size") is None:
            return {**data, "global_batch_size": 32}
        return data


class SftEval(Strict):
    every: int = Field(default=50, ge=0, description="held-out loss every N steps; 0: before and after only")


class SftMetrics(Strict):
    log_every: int = Field(default=1, gt=0, description="a metrics line every N optimizer steps")
    tensorboard: bool = False


class SftData(Strict):
    """Gates the instruction data passes, as corpus documents do. Paths are relative to the config file."""

    licences: ConfigPath = Path("../../data_pipeline/licences.yaml")
    pii: PiiStep = PiiStep()
    decontamination: DecontaminationStep = DecontaminationStep()
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="held out by a hash of the conversation id")


_RENAMED = {"eval_every": "eval.every", "log_every": "metrics.log_every"}


class FinetuneConfig(Strict):
    """`configs/finetune/*.yaml`: supervised fine-tuning on chat data, loss on assistant tokens only."""

    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()
    backend: Literal["deepspeed", "ddp"] = Field(
        default="deepspeed", description="accelerate with the DeepSpeed plugin, or plain DDP")
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 on GPU, fp32 on CPU")
    seq_len: int = Field(default=2048, gt=0, description="longer conversations are refused, never cut")
    batch: SftBatch = SftBatch()
    optim: OptimConfig = OptimConfig(lr=2e-5, min_lr=2e-6, weight_decay=0.0, warmup_steps=10)
    max_steps: int = Field(gt=0)
    seed: int = 1234
    data: SftData = SftData()
    eval: SftEval = SftEval()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: SftMetrics = SftMetrics()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in _RENAMED.items():
                if old in data:
                    raise ValueError(f"{old} is now {new}, the name pre-training configs use")
        return data


def load_finetune_config(path: Path, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """A fine-tuning config, with the data gates' paths resolved against the config's folder."""
    path = Path(path)
    return validate(FinetuneConfig, apply_overrides(read_yaml(path), overrides), source_label(path, overrides),
                    path.parent)
