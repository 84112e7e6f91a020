"""The one training loss (gptnl.trainer.loss): the NLL of each next token, in fp32, over the positions
the labels keep. Checked against a per-position computation, for pre-training's packed rows (every
position) and fine-tuning's masked labels (assistant tokens only), mean and sum."""

from __future__ import annotations

import math

import torch

from gptnl.trainer.loss import IGNORE, lm_loss, next_token_nll, target_count


def by_hand(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Sum of -log p(labels[b, t + 1] | logits[b, t]) over kept positions, and their count."""
    total, n = 0.0, 0
    logp = torch.log_softmax(logits.double(), dim=-1)
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] != IGNORE:
                total -= logp[b, t, labels[b, t + 1]].item()
                n += 1
    return total, n


def test_pretraining_loss_is_the_mean_over_every_next_token():
    torch.manual_seed(0)
    logits, tokens = torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))
    total, n = by_hand(logits, tokens)
    assert n == 3 * 6
    assert math.isclose(lm_loss(logits, tokens).item(), total / n, rel_tol=1e-6)


def test_masked_labels_take_loss_only_where_kept():
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 9, 13, dtype=torch.bfloat16), torch.randint(0, 13, (2, 9))
    labels[0, :5] = IGNORE  # the prompt of the first conversation
    labels[1, 6:] = IGNORE  # padding after the second
    total, n = by_hand(logits.float(), labels)
    assert target_count(labels) == n == 4 + 5
    summed = next_token_nll(logits, labels, reduction="sum")
    assert summed.dtype == torch.float32  # computed in fp32 whatever the logits' precision
    assert math.isclose(summed.item(), total, rel_tol=1e-5)
    assert math.isclose(next_token_nll(logits, labels).item(), total / n, rel_tol=1e-5)


def test_a_changed_ignored_position_changes_nothing_and_a_kept_one_does():
    torch.manual_seed(2)
    logits, labels = torch.randn(1, 6, 5, requires_grad=True), torch.tensor([[IGNORE, IGNORE, 1, 2, 3, 4]])
    base = next_token_nll(logits, labels, reduction="sum")
    (grad,) = torch.autograd.grad(base, logits)
    assert grad[0, 0].abs().sum() == 0 and grad[0, 5].abs().sum() == 0  # predicts an ignored label; last position
    assert grad[0, 1].abs().sum() > 0  # predicts labels[2], kept
