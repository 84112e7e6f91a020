"""Perplexity of a document longer than the model's context, through the real endpoint (the tiny
export served by vLLM on CPU behind the gateway): asked whole, the endpoint refuses it; scored in
rolling windows, the log-likelihood equals the one `transformers` computes over lm-eval's windows
(`loglikelihood_rolling`: window = the model's context, stride from the task file)."""

from __future__ import annotations

import math

import pytest
from conftest import ROOT

from gptnl.evals.client import Client
from gptnl.evals.local import served
from gptnl.evals.results import ModelInfo
from gptnl.evals.runner import run_cell
from gptnl.evals.spec import Settings
from gptnl.evals.tasks import EvalError, load_task

STRIDE = 512


def _long_document_task(folder, text: str, stride: int | None):
    folder.mkdir()
    (folder / "doc.txt").write_text(text)
    rolling = f"rolling: {{stride: {stride}}}\n" if stride else ""
    (folder / "task.yaml").write_text(f"name: {folder.name}\nvalue: taalvaardigheid\ndescription: x\ntype: perplexity\n"
                                      f"items: doc.txt\n{rolling}metrics: [bits_per_byte, perplexity]\n"
                                      "primary: bits_per_byte\n")
    return load_task(folder)


def _transformers_rolling(path, text: str, window: int, stride: int) -> tuple[float, int]:
    """lm-eval's own windows over the tokens, each scored by `transformers` (float32)."""
    import torch
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    tokens = tok(text, add_special_tokens=False)["input_ids"]
    total, scored = 0.0, 0
    for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
            tokens, prefix_token=tok.bos_token_id, max_seq_len=window - 1, context_len=window - stride)):
        ids = torch.tensor([list(context) + list(continuation)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        for i in range(len(context), ids.shape[1]):
            total += logp[i - 1, ids[0, i]].item()
            scored += 1
    return total, scored


def test_a_document_longer_than_the_context_is_scored_whole_as_transformers_scores_it(tiny_base, tmp_path):
    text = " ".join((ROOT / "data_pipeline" / "sample" / "heldout" / "nl-heldout.txt").read_text().split())
    strided = _long_document_task(tmp_path / "lang-strided", text, STRIDE)
    disjoint = _long_document_task(tmp_path / "lang", text, None)
    info = ModelInfo(name="tiny", endpoint="local", model_id="tiny", fingerprint="")
    with served({"tiny": tiny_base}, tmp_path / "serving") as (base, key):
        whole = Client(base, model_id="tiny", api_key=key, retries=0)
        with pytest.raises(EvalError, match="HTTP 400: .*the prompt is 2[0-9]{3} tokens.*give the model.s tokenizer"):
            run_cell(disjoint, whole, info, Settings())
        rolling = Client(base, model_id="tiny", api_key=key, tokenizer=str(tiny_base))
        assert rolling.max_model_len == 1024
        records = {t.name: run_cell(t, rolling, info, Settings()) for t in (strided, disjoint)}
    for name, stride in (("lang-strided", STRIDE), ("lang", 1022)):
        record, (row,) = records[name]
        expected, scored = _transformers_rolling(tiny_base, text, 1023, stride)
        assert scored > 1024 and row["tokens"] == scored, (row["tokens"], scored)
        assert row["loglik"] == pytest.approx(expected, rel=0, abs=1e-2), name  # measured: within 2e-5
        bpb = -expected / math.log(2) / len(text.encode())
        assert record["metrics"]["bits_per_byte"]["value"] == pytest.approx(bpb, rel=1e-4)
