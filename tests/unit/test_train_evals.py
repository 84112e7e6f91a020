"""Evaluation during training: the in-process log-likelihoods equal `transformers`' on the exported
model, the registry's tasks score with them, and tasks that need generation are refused up front."""

from __future__ import annotations

import pytest
import torch
import transformers

from gptnl import tokenizer as tokenizer_mod
from gptnl.config import ModelConfig
from gptnl.errors import GptnlError
from gptnl.hf import save_pretrained
from gptnl.model import Llama
from gptnl.train import evals


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_tokenizer):
    torch.manual_seed(4)
    cfg = ModelConfig(name="t", vocab_size=2048, dim=64, n_layers=2, n_heads=2, ffn_dim=160, max_seq_len=256)
    model = Llama(cfg).eval()
    out = save_pretrained(model.state_dict(), cfg, sample_tokenizer, tmp_path_factory.mktemp("m") / "model")
    tok = tokenizer_mod.load(sample_tokenizer)
    return model, tok, out


def test_logliks_equal_transformers_on_the_export(tiny):
    model, tok, out = tiny
    scorer = evals.LocalScorer(model, tok.tokenizer, tok.eos_id, 256, "cpu")
    pairs = [("De hoofdstad van Nederland is", " Amsterdam"), ("De hoofdstad van Nederland is", " Parijs"),
             ("", "Een zin zonder context."), ("Kort", " een veel langer antwoord met meerdere woorden erin")]
    ours = [a["loglik"] for a in scorer.loglik(pairs)]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    for (context, continuation), mine in zip(pairs, ours, strict=True):
        ctx = tok.tokenizer.encode(context, add_special_tokens=False).ids or [tok.eos_id]
        cont = tok.tokenizer.encode(continuation, add_special_tokens=False).ids
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(hf(ids).logits[0], dim=-1)
        theirs = sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
        assert mine == pytest.approx(theirs, abs=1e-4)
    assert ours[0] != ours[1]


def test_a_model_trained_with_a_bos_scores_with_it(tiny):
    """Shards whose documents open with a BOS (a Llama-style base): each context starts with it, as
    every training text did, also an empty one."""
    model, tok, out = tiny
    bos = [3]
    plain = evals.LocalScorer(model, tok.tokenizer, tok.eos_id, 256, "cpu")
    scorer = evals.LocalScorer(model, tok.tokenizer, tok.eos_id, 256, "cpu", bos_ids=bos)
    pairs = [("De hoofdstad van Nederland is", " Amsterdam"), ("", "Een zin zonder context.")]
    ours = [a["loglik"] for a in scorer.loglik(pairs)]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    for (context, continuation), mine in zip(pairs, ours, strict=True):
        ctx = bos + tok.tokenizer.encode(context, add_special_tokens=False).ids
        cont = tok.tokenizer.encode(continuation, add_special_tokens=False).ids
        with torch.no_grad():
            logprobs = torch.log_softmax(hf(torch.tensor([ctx + cont])).logits[0], dim=-1)
        assert mine == pytest.approx(sum(logprobs[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)), abs=1e-4)
    assert all(abs(a - b["loglik"]) > 1e-4 for a, b in zip(ours, plain.loglik(pairs), strict=True))


def test_registry_tasks_score_with_it(tiny):
    model, tok, _ = tiny
    scorer = evals.LocalScorer(model, tok.tokenizer, tok.eos_id, 256, "cpu")
    scores = evals.task_metrics(evals.load_tasks(["kennis", "taalvaardigheid"]), scorer, limit=6)
    assert set(scores) == {"eval/kennis/accuracy_norm", "eval/taalvaardigheid/accuracy"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


@pytest.mark.parametrize(("name", "message"), [("begrijpelijke-taal", "is a generate task"),
                                               ("geen-taak", "no .*task.yaml")])
def test_tasks_that_cannot_run_in_training_are_refused(name, message):
    with pytest.raises(GptnlError, match=message):
        evals.load_tasks([name])
