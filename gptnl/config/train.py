"""A pre-training run: optimizer, batch, data (one shard set or a mixture), evaluation, checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gptnl.config.base import ConfigPath, Strict, apply_overrides, read_yaml, source_label, validate
from gptnl.config.model import ModelConfig
from gptnl.errors import ConfigError


class OptimConfig(Strict):
    """AdamW with linear warmup and cosine decay to `min_lr`."""

    lr: float = Field(default=3e-4, gt=0)
    min_lr: float = Field(default=3e-5, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=1.0, ge=0, description="global-norm clip; 0 disables it")

    @model_validator(mode="after")
    def _min_below_max(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


class BatchConfig(Strict):
    """An optimizer step's batch, the same fields for pre-training and fine-tuning: `micro_batch_size`
    per process per forward pass, and either `grad_accum_steps` (the global batch grows with the
    processes) or `global_batch_size` (fixed; the accumulation is derived, so a run resumed on another
    number of processes takes the same steps). Neither: accumulation 1."""

    micro_batch_size: int = Field(default=8, gt=0, description="sequences per process per forward pass")
    grad_accum_steps: int | None = Field(default=None, gt=0, description="micro-batches per optimizer step")
    global_batch_size: int | None = Field(default=None, gt=0, description=(
        "sequences per optimizer step over all processes (not with grad_accum_steps)"))

    @model_validator(mode="after")
    def _one_way(self) -> BatchConfig:
        if self.grad_accum_steps is not None and self.global_batch_size is not None:
            raise ValueError("give grad_accum_steps or global_batch_size, not both")
        return self

    def accumulation(self, world: int) -> int:
        """Micro-batches each process runs per optimizer step, with `world` processes."""
        if self.global_batch_size is None:
            return self.grad_accum_steps or 1
        if self.global_batch_size % (self.micro_batch_size * world):
            raise ConfigError(f"batch.global_batch_size {self.global_batch_size} is not a multiple of "
                              f"micro_batch_size {self.micro_batch_size} x {world} process{'es' if world > 1 else ''}")
        return self.global_batch_size // (self.micro_batch_size * world)

    def global_batch(self, world: int) -> int:
        return self.micro_batch_size * self.accumulation(world) * world

    def describe(self) -> str:
        """For cards and logs: how the step's batch is made."""
        if self.global_batch_size is not None:
            return f"global {self.global_batch_size} (micro {self.micro_batch_size} per process, accumulation derived)"
        return f"micro {self.micro_batch_size} x accumulation {self.grad_accum_steps or 1} per process"


class MixtureSource(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="names the source in metrics (tokens_seen/NAME)")
    shards: ConfigPath = Field(description="output dir of `gptnl pack` (relative to the config file)")
    weight: float = Field(ge=0, description="share of the training sequences; weights are normalised")


class MixtureStage(Strict):
    """A curriculum stage: these weights until `until_step`; after the last stage, the sources' own."""

    until_step: int = Field(gt=0)
    weights: dict[str, float]


class MixtureConfig(Strict):
    """Weighted shard sets (e.g. nl 0.6, en 0.3, code 0.1), optionally in curriculum stages."""

    sources: list[MixtureSource] = Field(min_length=1)
    stages: list[MixtureStage] = []
    exhausted: Literal["repeat", "refuse"] = Field(default="repeat", description=(
        "a source the run needs more sequences of than it has: repeat it (a new epoch, logged) or refuse "
        "the run before it starts"))
    allow_change: bool = Field(default=False, description=(
        "on resume, accept a mixture that differs from the one the run started with (the change is recorded)"))

    @model_validator(mode="after")
    def _consistent(self) -> MixtureConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique (got {', '.join(names)})")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("the sources' weights sum to 0")
        last = 0
        for stage in self.stages:
            if stage.until_step <= last:
                raise ValueError("stages: until_step must increase from stage to stage")
            last = stage.until_step
            unknown = sorted(set(stage.weights) - set(names))
            if unknown:
                raise ValueError(f"stage until_step {stage.until_step}: unknown source {unknown[0]}; "
                                 f"sources: {', '.join(names)}")
            if any(w < 0 for w in stage.weights.values()) or sum(stage.weights.values()) <= 0:
                raise ValueError(f"stage until_step {stage.until_step}: weights must be >= 0 and not all 0")
        return self


class DataConfig(Strict):
    shards: ConfigPath | None = Field(default=None, description="output dir of `gptnl pack` (relative to the "
                                                                "config file)")
    mixture: MixtureConfig | None = Field(default=None, description="several shard sets with weights (not with shards)")
    seed: int = 1234

    @model_validator(mode="after")
    def _one_kind(self) -> DataConfig:
        if self.shards is not None and self.mixture is not None:
            raise ValueError("give either shards or mixture, not both")
        return self


class EvalConfig(Strict):
    every: int = Field(default=100, ge=0, description="0 disables validation")
    batches: int = Field(default=8, gt=0, description="micro-batches per process per validation")
    tasks: list[str] = Field(default=[], description=(
        "evaluation tasks (log-likelihood ones: multiple_choice, pairs) scored in-process at each validation, "
        "each task's primary metric logged as eval/TASK/METRIC"))
    task_limit: int | None = Field(default=64, gt=0, description="items per task at each evaluation (null: all)")


class CheckpointConfig(Strict):
    every: int = Field(default=100, ge=0, description="0: only on signals and at the end")
    keep_last: int = Field(default=3, gt=0)
    integrity: Literal["sha256", "size"] = Field(
        default="sha256", description="how a checkpoint's completeness is proven before it is resumed"
    )


class MetricsConfig(Strict):
    log_every: int = Field(default=10, gt=0, description="a metrics line every N optimizer steps")
    tensorboard: bool = True
    peak_tflops: float | None = Field(
        default=None, gt=0, description="per-device peak for MFU; null: known GPUs only, none on CPU"
    )


class TrainConfig(Strict):
    """One training run. `model` is a path (relative to this file) or the model mapping inline;
    with `init_from` (continued pre-training) it may be left out and is read from the base model."""

    model: ModelConfig | None = None
    init_from: ConfigPath | None = Field(default=None, description=(
        "a local Hugging Face LlamaForCausalLM folder to continue from (relative to this file)"))
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    batch: BatchConfig = BatchConfig()
    max_steps: int = Field(gt=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 on GPU, fp32 on CPU")
    activation_checkpointing: bool = False
    document_masking: bool = Field(default=False, description=(
        "attention stays inside each packed document (an EOS ends one); off: documents packed into one "
        "sequence see the ones before them, as in GPT-2-style packing"))
    compile: bool = Field(default=False, description=(
        "torch.compile the model and the loss (Inductor fuses norms, RoPE, SwiGLU and the cross-entropy); "
        "the first steps of each process are slower while it compiles"))
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = Field(default="default", description=(
        "with compile: Inductor's mode; max-autotune also times its own GEMM kernels against the BLAS "
        "library's and keeps the faster (a longer compile)"))
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _a_model(self) -> TrainConfig:
        if self.model is None and self.init_from is None:
            raise ValueError("model: required field is missing (or give init_from, a base model to continue)")
        return self


def load_train_config(path: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """A training config; a string `model:` is read as a model YAML relative to this file (so that
    `--set model.n_layers=4` reaches into it)."""
    path = Path(path)
    data = read_yaml(path)
    model = data.get("model")
    if isinstance(model, str):
        model_path = (path.parent / model).resolve()
        if not model_path.is_file():
            raise ConfigError(f"{path}: model: file {model} not found (looked at {model_path})")
        data = {**data, "model": read_yaml(model_path)}
    return validate(TrainConfig, apply_overrides(data, overrides), source_label(path, overrides), path.parent)
