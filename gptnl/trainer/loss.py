"""The one training loss: next-token cross-entropy in fp32 over the positions a mask keeps.

Pre-training keeps every position inside a packed sequence; fine-tuning keeps the assistant's
tokens (its labels carry -100 elsewhere). The labels are shifted, not the logits: slicing the
(batch, seq, vocab) logits costs a full-size copy and zero-fill in backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # a label that takes no loss (torch's and Hugging Face's convention)


def next_token_nll(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """NLL of `labels[:, t + 1]` given the logits at t; positions labelled IGNORE take none.
    `reduction="sum"` gives the summed NLL, for a loss normalised by a count taken elsewhere."""
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=IGNORE,
                           reduction=reduction)


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): the positions whose logits take a loss under `next_token_nll` (a bool mask
    shaped like `labels`) and, in row-major order, the token each one predicts. A model that computes
    logits only at `keep` gives `F.cross_entropy(those_logits, targets)` the same loss."""
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = shifted != IGNORE
    return keep, shifted[keep]


def target_count(labels: torch.Tensor) -> int:
    """How many positions of `labels` take a loss under `next_token_nll`."""
    return int((labels[:, 1:] != IGNORE).sum())


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Pre-training's loss: every next token of each packed sequence, averaged."""
    return next_token_nll(logits, tokens)


def loss_function(compiled: bool, mode: str = "default"):
    """`lm_loss`, or its torch.compile'd form: Inductor fuses the fp32 upcast, log-softmax and gather
    of the cross-entropy, which on a small model is a large share of a step."""
    return torch.compile(lm_loss, mode=mode) if compiled else lm_loss
