"""Evaluation during training (`eval.tasks`): the evaluation registry's log-likelihood tasks scored
in-process on the model being trained, no server, so a run logs e.g. `eval/kennis/accuracy_norm`
beside its validation loss. The tasks' own scoring (few-shot prefixes, choices, tie handling) and
metrics are the ones `gptnl eval run` uses; only the log-likelihoods come from here instead of an
endpoint. Every process scores every pair in the same order, so ZeRO-3's collective forward works
and every process gets the same figures."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from gptnl.artefacts import ShardsManifest
from gptnl.errors import ConfigError

LOGLIK_TYPES = ("multiple_choice", "pairs")
BATCH = 8


class LocalScorer:
    """`loglik(pairs)` as the evaluation client answers it, from a causal LM's logits: the summed
    log-probability of each continuation given its context, the context cut from the left to fit
    `max_len`. A model whose shards open each document with a BOS (`bos_ids` in their manifest, a
    base such as Llama or Salamandra) gets it before each context, as it saw every text in training;
    an empty context without one starts from EOS, as lm-eval does."""

    requests = cached = 0

    def __init__(self, model, tokenizer, eos_id: int, max_len: int, device, bos_ids: list[int] | tuple = ()):
        self.model, self.tokenizer, self.eos_id, self.max_len, self.device = model, tokenizer, eos_id, max_len, device
        self.bos_ids = list(bos_ids)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def loglik(self, pairs: list[tuple[str, str]], use_cache: bool = True) -> list[dict]:
        encoded = []
        for context, continuation in pairs:
            ctx, cont = (self.bos_ids + self._ids(context)) or [self.eos_id], self._ids(continuation)
            if not cont:
                raise ConfigError(f"evaluation during training: the continuation {continuation!r} has no tokens")
            full = (ctx + cont)[-self.max_len:]
            encoded.append((full, min(len(cont), len(full) - 1)))
        out = []
        with torch.no_grad():
            for start in range(0, len(encoded), BATCH):
                chunk = encoded[start:start + BATCH]
                width = max(len(f) for f, _ in chunk)
                x = torch.full((len(chunk), width), self.eos_id, dtype=torch.long)
                for i, (f, _) in enumerate(chunk):
                    x[i, :len(f)] = torch.tensor(f)
                logprobs = F.log_softmax(self.model(x.to(self.device)).float(), dim=-1)
                for i, (f, n) in enumerate(chunk):
                    targets = torch.tensor(f[len(f) - n:], device=logprobs.device)
                    picked = logprobs[i, len(f) - n - 1:len(f) - 1].gather(1, targets[:, None])
                    out.append({"loglik": float(picked.sum())})
        return out


def load_tasks(names: list[str]) -> list:
    """The configured tasks, refused up front when unknown or not log-likelihood tasks."""
    from gptnl.evals.tasks import load_task

    tasks = [load_task(n) for n in names]
    for t in tasks:
        if t.spec.type not in LOGLIK_TYPES:
            raise ConfigError(f"eval.tasks: {t.name} is a {t.spec.type} task; during training only "
                              f"{' and '.join(LOGLIK_TYPES)} tasks run (the rest need `gptnl eval run`)")
    return tasks


def task_metrics(tasks: list, scorer: LocalScorer, limit: int | None, seed: int = 0) -> dict[str, float]:
    """{eval/TASK/PRIMARY: value} for every task, scored as `gptnl eval run` scores it."""
    from gptnl.evals.metrics import METRICS
    from gptnl.evals.runner import score_rows
    from gptnl.evals.spec import Settings

    settings = Settings(name="in-training", limit=limit, seed=seed)
    out = {}
    for task in tasks:
        rows = score_rows(task, scorer, settings)
        value = METRICS[task.spec.primary].fn(rows, settings.model_dump())
        if value is not None:
            out[f"eval/{task.name}/{task.spec.primary}"] = float(value)
    return out


def tokenizer_of(manifest: ShardsManifest):
    from gptnl import tokenizer as tokenizer_mod

    return tokenizer_mod.load(Path(manifest.consumed.tokenizer.path)).tokenizer
