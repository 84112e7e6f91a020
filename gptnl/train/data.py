"""Packed-shard sequences in a deterministic order that a checkpoint can resume exactly.

The order is a function of (seed, position): position counts sequences consumed by the whole
job, epoch e uses permutation e of a seeded generator. Each global batch is cut into micro-batches
by (micro-step, rank), so the data a job sees depends on the global batch size only, not on how
many processes share it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gptnl.artefacts import ShardsManifest, read_manifest
from gptnl.errors import GptnlError


class Shards:
    """The sequences of one split of a `gptnl pack` output, memory-mapped."""

    def __init__(self, path: Path, split: str):
        self.path = Path(path)
        self.manifest = read_manifest(self.path, ShardsManifest)
        produced = self.manifest.produced
        self.seq_len: int = produced.seq_len
        self.vocab_size: int = produced.vocab_size
        dtype = np.dtype(produced.dtype)
        self._maps: list[np.memmap] = []
        self._starts: list[int] = []
        n = 0
        for shard in produced.splits[split].shards:
            file = self.path / shard.file
            expected = shard.sequences * self.seq_len * dtype.itemsize
            if not file.is_file() or file.stat().st_size != expected:
                raise GptnlError(f"{file}: missing or truncated shard (expected {expected} bytes); re-run `gptnl pack`")
            self._maps.append(np.memmap(file, dtype=dtype, mode="r").reshape(-1, self.seq_len))
            self._starts.append(n)
            n += shard.sequences
        self.num_sequences = n

    def __len__(self) -> int:
        return self.num_sequences

    def sequence(self, i: int) -> np.ndarray:
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._maps[shard][i - self._starts[shard]]

    def batch(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.sequence(i).astype(np.int64) for i in indices]))


class SequenceOrder:
    """Which sequence sits at each global position: a fresh seeded permutation per epoch."""

    def __init__(self, n: int, seed: int, key: tuple[int, ...] = ()):
        if n <= 0:
            raise GptnlError("the training split has no sequences")
        self.n, self.seed, self.key = n, seed, key  # key: a mixture source's own stream of permutations
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch, *self.key]).permutation(self.n)
        return int(self._perm[offset])


def micro_batch_positions(position: int, micro: int, rank: int, world: int, micro_batch: int) -> list[int]:
    """Global positions of the sequences that `rank` trains on in micro-step `micro` of the batch at `position`."""
    start = position + (micro * world + rank) * micro_batch
    return list(range(start, start + micro_batch))


def validation_indices(n: int, batches: int, micro_batch: int, rank: int, world: int) -> list[list[int]]:
    """A fixed slice of the validation split, dealt to ranks in micro-batches."""
    total = min(n, batches * micro_batch * world)
    mine = list(range(rank, total, world))
    return [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]
