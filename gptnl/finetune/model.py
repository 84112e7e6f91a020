"""The base model and tokenizer from a local folder, and the LoRA wrapping.

Any HF causal LM on disk will do (our exports, or a model a user downloaded earlier); nothing is
fetched. A tokenizer without a chat template gets ours, with its role markers added as special
tokens and the embeddings grown to match, so training and serving render the same text.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from gptnl.config import LoraSettings
from gptnl.errors import GptnlError
from gptnl.tokenizer import CHAT_TEMPLATE, ROLE_TOKENS


def load_base(base: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    base = Path(base)
    if not (base / "config.json").is_file():
        raise GptnlError(f"--base {base}: not a Hugging Face model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise GptnlError(f"--base {base}: cannot be loaded as a causal LM ({exc})") from None
    grew = False
    if not getattr(tokenizer, "chat_template", None):
        missing = [t for t in ROLE_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
            model.resize_token_embeddings(len(tokenizer))
            grew = True
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, grew


def wrap_lora(model, settings: LoraSettings, grew_vocab: bool = False):
    """LoRA on the named projections; when role tokens were added, the embeddings and output layer
    train in full too (new rows would otherwise stay random) and are saved with the adapter."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in settings.target_modules if m not in names]
    if missing:
        raise GptnlError(f"lora.target_modules: {', '.join(missing)} not in this model "
                         f"(its linear layers: {', '.join(sorted(n for n in names if n.endswith('proj')))})")
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
                        modules_to_save=["embed_tokens", "lm_head"] if grew_vocab else None)
    return get_peft_model(model, config)


class TargetLogits:
    """The LM head computes logits only at the positions a loss is taken on (`only(keep)`), as rows
    (n, vocab) instead of (batch, seq, vocab). In chat fine-tuning most positions are the prompt or
    padding, and the head with its fp32 cross-entropy is a large share of a small model's step; the
    loss and its gradients are the same. A forward pre-hook on the output layer does the selection,
    so the model's own forward runs unchanged inside accelerate's DeepSpeed or DDP wrapper (which
    calling the decoder and the head separately would bypass)."""

    def __init__(self, model):
        self.keep: torch.Tensor | None = None
        self.head = model.get_output_embeddings()
        if self.head is None:
            raise GptnlError(f"{type(model).__name__} has no output layer to compute logits with")
        self.head.register_forward_pre_hook(self._select)

    def _select(self, _module, args):
        if self.keep is None:
            return None
        hidden, *rest = args
        if hidden.shape[:2] != self.keep.shape:
            raise GptnlError(f"output layer input {tuple(hidden.shape)} does not match the loss mask "
                             f"{tuple(self.keep.shape)}")
        return (hidden[self.keep], *rest)

    @contextmanager
    def only(self, keep: torch.Tensor):
        self.keep = keep
        try:
            yield
        finally:
            self.keep = None
