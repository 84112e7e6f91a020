"""Tokenise a corpus dir into fixed-length training sequences in memory-mapped token shards.

Documents are joined with EOS (each opened with the tokenizer's BOS, when it adds one, as a base model
saw in its own training) into one token stream per split and cut into sequences of
`seq_len` tokens (labels are shifted inside a sequence, as OLMo does, so nothing is stored twice).
A document goes to validation when a hash of its id falls under `val_fraction`: the split of a
document never changes when others are added. Memory holds one batch of documents and one shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptnl import corpus as corpus_mod
from gptnl import tokenizer as tokenizer_mod
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_bytes, read_manifest, sha256_file, write_manifest

SPLITS = ("train", "validation")
ENCODE_BATCH = 64  # documents per encode_batch call: bounds memory (token lists of Python ints are large)


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

    def add(self, ids: list[int]) -> None:
        self.documents += 1
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


def _batches(docs: Iterator[corpus_mod.Document], size: int) -> Iterator[list[corpus_mod.Document]]:
    batch: list[corpus_mod.Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pack(
    corpus: Path,
    tokenizer_dir: Path,
    seq_len: int,
    out: Path,
    *,
    val_fraction: float = 0.01,
    shard_tokens: int = 1 << 25,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Pack `corpus` into `out`; returns the manifest. `progress` is called with bytes of text read."""
    if seq_len < 2:
        raise GptnlError(f"--seq-len must be at least 2, got {seq_len}")
    if not 0 <= val_fraction < 1:
        raise GptnlError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    tok = tokenizer_mod.load(tokenizer_dir)
    files = corpus_mod.corpus_files(corpus)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.bin"):
        stale.unlink()
    (out / "manifest.json").unlink(missing_ok=True)
    dtype = token_dtype(tok.vocab_size)
    seqs_per_shard = max(1, shard_tokens // seq_len)
    writers = {s: ShardWriter(out, s, seq_len, seqs_per_shard, dtype) for s in SPLITS}
    eos, bos = tok.eos_id, tok.bos_ids  # a base trained with a BOS before each document sees one here too
    for batch in _batches(corpus_mod.iter_documents(corpus), ENCODE_BATCH):
        encodings = tok.tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings, strict=True):
            writers[split_of(doc.id, val_fraction)].add(bos + enc.ids + [eos])
        if progress:
            progress(sum(len(d.text.encode("utf-8")) for d in batch))
    splits = {s: w.finish() for s, w in writers.items()}
    if not splits["train"]["sequences"]:
        raise GptnlError(
            f"{corpus}: only {splits['train']['tokens']} training tokens, fewer than one sequence of {seq_len}"
        )
    return write_manifest(
        out,
        stage="pack",
        consumed={
            "corpus": str(Path(corpus).resolve()),
            "files": [{"path": str(p), "sha256": sha256_file(p)} for p in files],
            "tokenizer": {"path": str(Path(tokenizer_dir).resolve()), "checksum": tok.checksum},
        },
        produced={
            "dtype": dtype.name,
            "seq_len": seq_len,
            "vocab_size": tok.vocab_size,
            "eos_id": eos,
            "bos_ids": bos,
            "splits": splits,
        },
        config={"seq_len": seq_len, "val_fraction": val_fraction, "shard_tokens": shard_tokens},
    )


def repack(shards: Path) -> dict:
    """Pack `shards` again from the corpus and tokenizer its manifest names, with the same settings
    (after a takedown removed documents from that corpus)."""
    m = read_manifest(shards)
    if m.get("stage") != "pack":
        raise GptnlError(f"{shards}: not a shards dir written by `gptnl pack`")
    c = m["config"]
    return pack(Path(m["consumed"]["corpus"]), Path(m["consumed"]["tokenizer"]["path"]), c["seq_len"], shards,
                val_fraction=c["val_fraction"], shard_tokens=c["shard_tokens"])
