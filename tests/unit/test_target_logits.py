"""Fine-tuning computes logits only where the loss is taken (`TargetLogits`): the loss and every
gradient are those of the full (batch, seq, vocab) logits, on a real transformers Llama, plain and
with LoRA whose output layer trains in full (the grown-vocabulary case)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from gptnl.config import LoraSettings
from gptnl.errors import GptnlError
from gptnl.finetune.model import TargetLogits, wrap_lora
from gptnl.trainer.loss import IGNORE, next_token_nll, next_token_targets


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True))


def batch():
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 12))
    attn = torch.ones_like(ids)
    attn[2, 8:] = 0  # a shorter conversation, right-padded
    labels = ids.clone()
    labels[0, :6] = IGNORE  # prompts
    labels[1, :3] = IGNORE
    labels[1, 5:9] = IGNORE  # a second user turn between two answers
    labels[2, :4] = IGNORE
    labels[2, 8:] = IGNORE
    return ids, attn, labels


def losses_and_grads(model, selected: bool):
    ids, attn, labels = batch()
    model.zero_grad()
    if selected:
        head = TargetLogits(model)
        keep, targets = next_token_targets(labels)
        with head.only(keep):
            logits = model(input_ids=ids, attention_mask=attn).logits
        assert logits.shape == (int(keep.sum()), 97)  # rows only where a loss is taken
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    else:
        loss = next_token_nll(model(input_ids=ids, attention_mask=attn).logits, labels, reduction="sum")
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_logits_at_targets_give_the_full_loss_and_gradients(lora):
    def make():
        model = tiny_llama()
        return wrap_lora(model, LoraSettings(r=4), grew_vocab=True) if lora else model

    full_loss, full_grads = losses_and_grads(make(), selected=False)
    part_loss, part_grads = losses_and_grads(make(), selected=True)
    assert abs(part_loss - full_loss) <= 1e-5 * abs(full_loss)
    assert full_grads.keys() == part_grads.keys() and full_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(part_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_outside_only_the_model_gives_every_logit_and_a_wrong_mask_is_refused():
    model = tiny_llama()
    head = TargetLogits(model)
    ids, attn, labels = batch()
    assert model(input_ids=ids, attention_mask=attn).logits.shape == (3, 12, 97)
    with head.only(torch.ones(3, 11, dtype=torch.bool)), pytest.raises(GptnlError, match="does not match the loss"):
        model(input_ids=ids, attention_mask=attn)
    assert head.keep is None  # cleared even when the forward raised
