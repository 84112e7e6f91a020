"""What a generated answer is worth: each scorer registers itself with `@scorer(name)` and turns
(task spec, item, answer text) into the row fields the task's metrics read."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gptnl.evals import detectors, squad
from gptnl.evals.metrics import f1_tokens
from gptnl.evals.readability import measure
from gptnl.evals.spec import TaskSpec

ScorerFn = Callable[[TaskSpec, dict, str], dict[str, Any]]
SCORERS: dict[str, ScorerFn] = {}


def scorer(name: str) -> Callable[[ScorerFn], ScorerFn]:
    def register(fn: ScorerFn) -> ScorerFn:
        if name in SCORERS:
            raise ValueError(f"scorer {name!r} is registered twice")
        SCORERS[name] = fn
        return fn

    return register


def targets(spec: TaskSpec, item: dict) -> list[str]:
    value = item.get(spec.answer)
    return list(value) if isinstance(value, list) else [value] if isinstance(value, str) else []


@scorer("none")
def _none(spec: TaskSpec, item: dict, text: str) -> dict:
    return {}


@scorer("exact")
def _exact(spec: TaskSpec, item: dict, text: str) -> dict:
    return {"score": float(any(text.strip().lower() == t.strip().lower() for t in targets(spec, item)))}


@scorer("f1")
def _f1(spec: TaskSpec, item: dict, text: str) -> dict:
    return {"score": max(f1_tokens(text, t) for t in targets(spec, item))}


@scorer("squad")
def _squad(spec: TaskSpec, item: dict, text: str) -> dict:
    """SQuAD's exact match and F1 against the best gold answer (v2: none means unanswerable)."""
    em, f1 = squad.best(text.strip().split("\n")[0], targets(spec, item))
    return {"squad_em": em, "squad_f1": f1}


@scorer("regex")
def _regex(spec: TaskSpec, item: dict, text: str) -> dict:
    return {"score": float(bool(re.search(spec.pattern, text)))}


@scorer("pii")
def _pii(spec: TaskSpec, item: dict, text: str) -> dict:
    found = detectors.leaks(text)
    return {"flag": bool(found), "found": found}


@scorer("refusal")
def _refusal(spec: TaskSpec, item: dict, text: str) -> dict:
    return {"flag": detectors.refuses(text)}


def chrf_stats(text: str, references: list[str]) -> dict:
    """sacrebleu's sentence statistics for chrF and chrF++ (summed per corpus by the metrics)."""
    from sacrebleu.metrics import CHRF

    refs = [[r] for r in references]
    return {"chrf_stats": CHRF()._extract_corpus_statistics([text], refs)[0],
            "chrf_pp_stats": CHRF(word_order=2)._extract_corpus_statistics([text], refs)[0],
            "chrf_sentence": CHRF().sentence_score(text, references).score}


@scorer("chrf")
def _chrf(spec: TaskSpec, item: dict, text: str) -> dict:
    return chrf_stats(text, targets(spec, item))


@scorer("readability")
def _readability(spec: TaskSpec, item: dict, text: str) -> dict:
    """B1 proxies; where the item has a `reference` answer, also whether the answer keeps its meaning
    (chrF against it at least `min_chrf`): short nonsense is readable, not plain language."""
    m = measure(text)
    b1 = spec.b1
    row = {"b1": bool(m and m.flesch_douma >= b1.min_flesch_douma and m.words_per_sentence <= b1.max_sentence_words
                      and m.frequent_share >= b1.min_frequent_share),
           "flesch_douma": m and m.flesch_douma, "words_per_sentence": m and m.words_per_sentence,
           "words_per_clause": m and m.words_per_clause, "frequent_share": m and m.frequent_share}
    references = item.get("reference")
    if references:
        stats = chrf_stats(text, references if isinstance(references, list) else [references])
        row.update(stats, b1_faithful=row["b1"] and stats["chrf_sentence"] >= spec.min_chrf)
    return row


@scorer("simplification")
def _simplification(spec: TaskSpec, item: dict, text: str) -> dict:
    """SARI against the item's `source` and reference simplifications, chrF, and the B1 proxies,
    with B1 counted only where the output keeps the meaning (chrF >= min_chrf)."""
    from gptnl.evals.sari import sari

    refs = targets(spec, item)
    answer = text.strip().split("\n\n")[0].strip()  # the rewritten sentence, not what a chatty model adds after it
    row = _readability(spec, {"reference": refs}, answer)
    return {**row, "sari": sari(item["source"], answer, refs)}
