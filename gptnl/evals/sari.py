"""SARI (Xu et al. 2016, "Optimizing Statistical Machine Translation for Text Simplification"):
how well a simplification keeps, deletes and adds n-grams (n = 1..4) relative to the source and
the references, in the form the `evaluate` and tensor2tensor implementations compute it: 0/0
counts as 1 (an output that matches a reference exactly scores full marks), keep recall is taken
over n-gram counts (the fix of cocoxu/simplification#6), deletion scores precision only, and
sentences are lower-cased and tokenised with sacrebleu's 13a tokenizer first. No installable
package ships SARI without fetching code from a hub at run time, so it is written out here and
checked against the published example numbers (tests/unit/test_metrics.py)."""

from __future__ import annotations

from collections import Counter
from functools import cache


@cache
def _tokenizer():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _f(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _scores(source: list[str], output: list[str], refs: list[list[str]]) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order."""
    k = len(refs)
    ref_counts = Counter(g for r in refs for g in r)
    src = Counter({g: c * k for g, c in Counter(source).items()})  # weighted as if once per reference
    out = Counter({g: c * k for g, c in Counter(output).items()})

    kept, kept_all = src & out, src & ref_counts
    kept_good = kept & ref_counts
    keep_p = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    keep_r = sum(kept_good.values()) / sum(kept_all.values()) if kept_all else 1.0

    deleted = src - out
    deleted_good = deleted - ref_counts
    del_p = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0

    added = set(out) - set(src)
    added_good, should_add = added & set(ref_counts), set(ref_counts) - set(src)
    add_p = len(added_good) / len(added) if added else 1.0
    add_r = len(added_good) / len(should_add) if should_add else 1.0
    return _f(keep_p, keep_r), del_p, _f(add_p, add_r)


def _tokens(text: str) -> list[str]:
    return _tokenizer()(text.lower()).split(" ")


def sari(source: str, output: str, references: list[str]) -> float:
    """SARI of one output, 0..100: the mean over n = 1..4 of keep, deletion and addition scores."""
    if not references:
        raise ValueError("SARI needs at least one reference")
    s, o, refs = _tokens(source), _tokens(output), [_tokens(r) for r in references]
    per_n = [_scores(_ngrams(s, n), _ngrams(o, n), [_ngrams(r, n) for r in refs]) for n in range(1, 5)]
    keep, delete, add = (sum(x[i] for x in per_n) / 4 for i in range(3))
    return 100 * (keep + delete + add) / 3
