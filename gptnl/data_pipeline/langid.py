"""Language identification with py3langid, which ships its model (no download) and, on the
project's labelled test set, keeps Afrikaans and West Frisian apart from Dutch, where fastText's
lid.176 calls a quarter to half of them Dutch.

Probabilities are py3langid's normalised scores over all its languages; the pipeline keeps a
document when the top language is `nl` with at least the recipe's threshold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

from gptnl.assets import asset
from gptnl.data_pipeline.ledger import refuse
from gptnl.fileio import read_jsonl

TESTSET = asset("data_pipeline", "langid", "testset.jsonl")


@dataclass(frozen=True)
class LanguageGuess:
    lang: str
    score: float


class LanguageId:
    """Thread-unsafe by design (one per worker process); loading the model takes about a second."""

    @cached_property
    def _identifier(self):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def classify(self, text: str) -> LanguageGuess:
        lang, score = self._identifier.classify(text)
        return LanguageGuess(lang, float(score))


def load_testset(path: Path = TESTSET) -> list[dict]:
    return read_jsonl(path)


def evaluate(items: list[dict], lid: LanguageId | None = None) -> dict:
    """Accuracy overall and per (language, kind), and how often another language was called Dutch."""
    lid = lid or LanguageId()
    hits: Counter = Counter()
    totals: Counter = Counter()
    called_dutch: Counter = Counter()
    confusion: dict[str, Counter] = defaultdict(Counter)
    for item in items:
        guess = lid.classify(item["text"]).lang
        key = f"{item['lang']}/{item['kind']}"
        totals[key] += 1
        hits[key] += guess == item["lang"]
        confusion[item["lang"]][guess] += 1
        if guess == "nl" and item["lang"] != "nl":
            called_dutch[item["lang"]] += 1
    return {
        "accuracy": sum(hits.values()) / max(1, sum(totals.values())),
        "per_group": {k: hits[k] / totals[k] for k in sorted(totals)},
        "wrongly_dutch": dict(called_dutch),
        "confusion": {k: dict(v) for k, v in confusion.items()},
        "items": sum(totals.values()),
    }


class DutchLanguageFilter(BaseFilter):
    """Keeps documents whose top language is one of `keep` with at least its threshold (`min_score`:
    one for all, or one per language); writes `lang`, `lang_score`."""

    name = "🗣️ language"

    def __init__(self, keep: str | list[str] = "nl", min_score: float | dict[str, float] = 0.65,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.keep = [keep] if isinstance(keep, str) else list(keep)
        self.min_score = min_score if isinstance(min_score, dict) else {lang: min_score for lang in self.keep}
        self._lid: LanguageId | None = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        self._lid = self._lid or LanguageId()
        guess = self._lid.classify(doc.text)
        doc.metadata["lang"], doc.metadata["lang_score"] = guess.lang, round(guess.score, 4)
        if guess.lang not in self.keep:
            return refuse(doc, f"language {guess.lang}", f"{guess.score:.2f}")
        if guess.score < self.min_score[guess.lang]:
            return refuse(doc, f"language {guess.lang} below {self.min_score[guess.lang]}", f"{guess.score:.2f}")
        return True
