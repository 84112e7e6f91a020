"""What the trainer reads at each global position: one shard set, or a weighted mixture of several.

A mixture is a pure function of (seed, position), so a resumed run sees exactly the sequences an
uninterrupted one would. Each weight set becomes a pattern of `PERIOD` slots in which source d
holds round(w_d · PERIOD) slots (largest remainders), spread evenly by weighted fair queueing
(slot times (k + ½)/n_d, merged); position p takes slot p mod PERIOD. So the realised share of
every source is its weight to 1/PERIOD over whole periods, and within one slot per source over any
prefix. The k-th sequence a source gives is its own seeded permutation's k-th (a new permutation
per epoch), so a source that runs out repeats in a fresh order, or the run is refused up front.
Curriculum stages switch the pattern at `until_step`; each source continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptnl.config import TrainConfig
from gptnl.errors import ConfigError
from gptnl.train.data import SequenceOrder, Shards

PERIOD = 10_000


def pattern(weights: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source of each slot, the slot's rank among its source's slots, slots per source)."""
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    ideal = w * PERIOD
    counts = np.floor(ideal).astype(np.int64)
    short = PERIOD - counts.sum()
    counts[np.argsort(-(ideal - counts), kind="stable")[:short]] += 1
    times = np.concatenate([(np.arange(n) + 0.5) / n for n in counts if n] or [np.empty(0)])
    owner = np.concatenate([np.full(n, d) for d, n in enumerate(counts) if n])
    rank = np.concatenate([np.arange(n) for n in counts if n])
    order = np.lexsort((owner, times))
    return owner[order], rank[order], counts


@dataclass
class Stage:
    start: int  # first global position
    owner: np.ndarray
    rank: np.ndarray
    counts: np.ndarray
    consumed: np.ndarray  # sequences of each source used before `start`

    def used(self, position: int) -> np.ndarray:
        """Sequences of each source used by positions [0, position), for position within this stage."""
        full, part = divmod(position - self.start, PERIOD)
        return self.consumed + full * self.counts + np.bincount(self.owner[:part], minlength=len(self.counts))


class Stream:
    """One shard set in a seeded order (the plain run)."""

    def __init__(self, shards: Path, seed: int):
        self.names: list[str] = []
        self.train = [Shards(shards, "train")]
        self.validation = [(None, Shards(shards, "validation"))]
        self.paths = {"": str(Path(shards).resolve())}
        self._order = SequenceOrder(len(self.train[0]), seed)

    @property
    def first(self) -> Shards:
        return self.train[0]

    def __len__(self) -> int:
        return sum(len(t) for t in self.train)

    def batch(self, positions: list[int]) -> torch.Tensor:
        return self.first.batch([self._order[p] for p in positions])

    def seen(self, position: int) -> dict[str, float]:
        return {}


class Mixture(Stream):
    """Several shard sets by weight, in the pattern described above; per-source counts for metrics."""

    def __init__(self, cfg: TrainConfig, global_batch: int, max_steps: int):
        mix = cfg.data.mixture
        self.names = [s.name for s in mix.sources]
        self.train = [Shards(s.shards, "train") for s in mix.sources]
        self.validation = [(s.name, Shards(s.shards, "validation")) for s in mix.sources]
        self.paths = {s.name: str(Path(s.shards).resolve()) for s in mix.sources}
        self.weights = [s.weight for s in mix.sources]
        first = self.train[0]
        for s, t in zip(mix.sources, self.train, strict=True):
            theirs, mine = t.manifest.consumed.tokenizer.checksum, first.manifest.consumed.tokenizer.checksum
            if theirs != mine or t.seq_len != first.seq_len:
                raise ConfigError(f"mixture source {s.name}: packed with another tokenizer or seq_len than "
                                  f"{self.names[0]} ({s.shards}); every source needs the same")
            if not len(t):
                raise ConfigError(f"mixture source {s.name}: {s.shards} has no training sequences")
        self._orders = [SequenceOrder(len(t), cfg.data.seed, key=(i + 1,)) for i, t in enumerate(self.train)]
        self.stages: list[Stage] = []
        bounds = [(st.until_step, [st.weights.get(n, 0.0) for n in self.names]) for st in mix.stages]
        start, consumed = 0, np.zeros(len(self.names), dtype=np.int64)
        for until, weights in [*bounds, (None, self.weights)]:
            owner, rank, counts = pattern(weights)
            stage = Stage(start, owner, rank, counts, consumed)
            self.stages.append(stage)
            if until is not None:
                start = until * global_batch
                consumed = stage.used(start)
        self._refuse_exhausted(mix, max_steps * global_batch)

    def _refuse_exhausted(self, mix, end: int) -> None:
        if mix.exhausted != "refuse":
            return
        for name, need, t in zip(self.names, self._used(end), self.train, strict=True):
            if need > len(t):
                raise ConfigError(f"mixture source {name}: the run needs {need:,} sequences of it and it has "
                                  f"{len(t):,}; add data, lower its weight, or set data.mixture.exhausted: repeat")

    def _stage(self, position: int) -> Stage:
        return next(s for s in reversed(self.stages) if s.start <= position)

    def _used(self, position: int) -> np.ndarray:
        return self._stage(position).used(position)

    def locate(self, position: int) -> tuple[int, int]:
        """(source, sequence index in it) at a global position."""
        stage = self._stage(position)
        full, slot = divmod(position - stage.start, PERIOD)
        d = int(stage.owner[slot])
        k = int(stage.consumed[d] + full * stage.counts[d] + stage.rank[slot])
        return d, self._orders[d][k]

    def batch(self, positions: list[int]) -> torch.Tensor:
        rows = []
        for p in positions:
            d, i = self.locate(p)
            rows.append(self.train[d].sequence(i).astype(np.int64))
        return torch.from_numpy(np.stack(rows))

    def seen(self, position: int) -> dict[str, float]:
        """Per source: tokens and epochs consumed by positions [0, position)."""
        used, seq = self._used(position), self.first.seq_len
        out: dict[str, float] = {}
        for name, n, t in zip(self.names, used, self.train, strict=True):
            out[f"tokens_seen/{name}"] = int(n) * seq
            out[f"epoch/{name}"] = int(n) // len(t)
        return out


def open_stream(cfg: TrainConfig, shards: Path | None, global_batch: int) -> Stream:
    """The run's data: `cfg.data.mixture`, else the one shard set (`shards` already resolved)."""
    if cfg.data.mixture is not None:
        return Mixture(cfg, global_batch, cfg.max_steps)
    return Stream(shards, cfg.data.seed)
