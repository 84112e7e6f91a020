"""The shards' format: one token stream per split, cut into sequences of `seq_len` tokens and
written a shard-sized buffer at a time (labels are shifted inside a sequence, as OLMo does, so
nothing is stored twice). A document goes to validation when a hash of its id falls under
`val_fraction`: the split of a document never changes when others are added."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptnl.fileio import atomic_write_bytes, sha256_file

SPLITS = ("train", "validation")


def split_of(doc_id: str, val_fraction: float) -> str:
    """'validation' or 'train', from the first 8 bytes of sha256(id): stable forever."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")
    return "validation" if h < val_fraction * 2**64 else "train"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class ShardWriter:
    """Fills one shard-sized buffer at a time and writes it when full."""

    out: Path
    split: str
    seq_len: int
    seqs_per_shard: int
    dtype: np.dtype
    documents: int = 0
    tokens: int = 0
    shards: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._buf = np.empty(self.seq_len * self.seqs_per_shard, dtype=self.dtype)
        self._fill = 0

    def add(self, ids, documents: int = 1) -> None:
        """Append `documents` documents' tokens (a list, or an array read back from a part)."""
        self.documents += documents
        self.tokens += len(ids)
        arr = np.asarray(ids, dtype=self.dtype)
        while arr.size:
            take = min(arr.size, self._buf.size - self._fill)
            self._buf[self._fill : self._fill + take] = arr[:take]
            self._fill += take
            arr = arr[take:]
            if self._fill == self._buf.size:
                self._flush(self._fill)

    def _flush(self, n_tokens: int) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        atomic_write_bytes(self.out / name, self._buf[:n_tokens].tobytes())
        self.shards.append(
            {"file": name, "sequences": n_tokens // self.seq_len, "sha256": sha256_file(self.out / name)}
        )
        self._fill = 0

    def finish(self) -> dict:
        """Write the last, partly filled shard; a tail shorter than one sequence is dropped and counted."""
        full = (self._fill // self.seq_len) * self.seq_len
        dropped = self._fill - full
        if full:
            self._flush(full)
        self._fill = 0
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "sequences": sum(s["sequences"] for s in self.shards),
            "tokens_dropped": dropped,
            "shards": self.shards,
        }
