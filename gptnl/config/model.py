"""The model's dimensions (Llama architecture) and RoPE scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gptnl.config.base import Strict, read_yaml, validate
from gptnl.errors import ConfigError


class RopeScaling(Strict):
    """RoPE frequency scaling as Hugging Face's Llama applies it: `llama3` (Llama 3.1's smooth
    interpolation, used by Salamandra-style long-context checkpoints) or `linear` (position
    interpolation). The fields are HF's own names, so a base model's config.json reads as is."""

    rope_type: Literal["llama3", "linear"]
    factor: float = Field(gt=0)
    low_freq_factor: float | None = Field(default=None, gt=0, description="llama3 only")
    high_freq_factor: float | None = Field(default=None, gt=0, description="llama3 only")
    original_max_position_embeddings: int | None = Field(default=None, gt=0, description="llama3 only")

    @model_validator(mode="after")
    def _llama3_fields(self) -> RopeScaling:
        needed = ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [f for f in needed if getattr(self, f) is None]
        if self.rope_type == "llama3" and missing:
            raise ValueError(f"rope_type llama3 needs {', '.join(missing)}")
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError("rope_type llama3 needs high_freq_factor > low_freq_factor")
        return self


class ModelConfig(Strict):
    """Llama-architecture dimensions (the names follow Meta's `params.json`)."""

    name: str = "gptnl"
    vocab_size: int | None = Field(
        default=None, gt=0, description="null: taken from the tokenizer, rounded up to a multiple of 64"
    )
    dim: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int | None = Field(default=None, gt=0, description="null: same as n_heads (no GQA)")
    ffn_dim: int = Field(gt=0)
    max_seq_len: int = Field(default=2048, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: RopeScaling | None = None
    norm_eps: float = Field(default=1e-5, gt=0)
    tie_embeddings: bool = False
    init_std: float = Field(default=0.02, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head dim dim/n_heads = {self.dim // self.n_heads} must be even for RoPE")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def with_vocab(self, tokenizer_vocab: int) -> ModelConfig:
        """The config with `vocab_size` filled in from the tokenizer (rounded up to 64 for fast matmuls)."""
        if self.vocab_size is not None:
            if self.vocab_size < tokenizer_vocab:
                raise ConfigError(
                    f"model vocab_size {self.vocab_size} is smaller than the tokenizer's {tokenizer_vocab} tokens"
                )
            return self
        return self.model_copy(update={"vocab_size": -(-tokenizer_vocab // 64) * 64})


def load_model_config(path: Path) -> ModelConfig:
    return validate(ModelConfig, read_yaml(path), str(path))
