"""SQuAD's answer normalisation, exact match and token F1, as the official v1.1/v2.0 evaluation
script defines them (and EuroEval and lm-eval score SQuAD-nl with): lower-case, drop punctuation
and the English articles a/an/the, collapse white space; the best score over the gold answers. An
unanswerable question (no gold answers) is right only when the answer is empty."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalise(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(prediction: str, gold: str) -> float:
    return float(normalise(prediction) == normalise(gold))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalise(prediction).split(), normalise(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def best(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(exact match, F1) against the closest gold answer; no gold answers means unanswerable."""
    golds = [g for g in golds if normalise(g)] or [""]
    return max(exact(prediction, g) for g in golds), max(f1(prediction, g) for g in golds)
