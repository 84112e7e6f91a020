"""`gptnl pack` and `gptnl tokenizer train|extend` settings: their flags' defaults live here (the
CLI, `gptnl slurm submit pack` and the library functions read them from these models), and a pack's
settings are recorded in its manifest as `PackSettings`."""

from __future__ import annotations

from pydantic import Field

from gptnl.config.base import Strict


class PackSettings(Strict):
    seq_len: int = Field(default=1024, ge=2, description="tokens per training sequence")
    val_fraction: float = Field(default=0.01, ge=0, lt=1, description="share of documents (by id hash) for "
                                                                       "validation")
    shard_tokens: int = Field(default=1 << 25, gt=0, description="tokens per shard file")


class TokenizerSettings(Strict):
    vocab_size: int = Field(default=16000, ge=263, description="byte-level BPE: 256 bytes + 7 special tokens at least")
    min_frequency: int = Field(default=2, ge=1, description="a merge (a new token) is seen at least this often")


PACK = PackSettings()
TOKENIZER = TokenizerSettings()
