"""Which conversations each process trains on at each step, as a pure function of the seed.

A step takes the next global batch of conversations of a seeded, per-epoch shuffle, sorts them
by length and cuts them into micro-batches, dealt to processes in turn. With `global_batch_size`
(the default) the global batch is the same for any number of processes (only the accumulation
changes), so a 1-process and a 2-process run take the same steps, and a resumed run continues
exactly where it stopped.

Micro-batches are padded to their longest conversation. Sorting inside the global batch keeps
that padding small without changing which conversations form a step; `padding_share` measures it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=4)
def _order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def step_conversations(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """Indices into the training set for optimizer step `step` (0-based)."""
    out = []
    for pos in range(step * global_batch, (step + 1) * global_batch):
        epoch, k = divmod(pos, n)
        out.append(int(_order(seed, epoch, n)[k]))
    return out


def micro_batches(step: int, lengths: list[int], global_batch: int, micro: int, rank: int, world: int,
                  seed: int) -> list[list[int]]:
    """This rank's micro-batches (lists of indices) for `step`."""
    chosen = sorted(step_conversations(step, len(lengths), global_batch, seed), key=lambda i: (-lengths[i], i))
    batches = [chosen[i : i + micro] for i in range(0, len(chosen), micro)]
    return batches[rank::world]


def collate(encoded: list, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask, and labels (-100 where no loss is taken)."""
    width = max(len(e.ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        attn[row, :n] = 1
        labels[row, :n] = torch.where(torch.tensor(e.mask), torch.tensor(e.ids), torch.tensor(-100))
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    """Padding tokens as a share of all tokens computed."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / total if total else 0.0
