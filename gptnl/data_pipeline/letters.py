"""Precision and recall of person-name detection on the bundled CC0 test letters
(`data_pipeline/pii/letters.jsonl`: Dutch letters with every person name marked by its span).

A finding counts only when its span is exactly a gold span; the card reports the figures, so a
reader knows how much a name detector misses (recall) and how often it removes other text
(precision, which matters more)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from gptnl import pii
from gptnl.assets import asset
from gptnl.errors import GptnlError
from gptnl.fileio import read_jsonl

LETTERS = asset("data_pipeline", "pii", "letters.jsonl")


class NameScores(BaseModel):
    letters: int
    gold: int
    found: int
    true_positives: int
    precision: float
    recall: float
    false_positives: list[str]
    missed: list[str]


def load_letters(path: Path = LETTERS) -> list[dict]:
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError) as exc:
        raise GptnlError(f"{path}: cannot read the test letters ({exc})") from None
    for row in rows:
        for start, end, name in row["names"]:
            if row["text"][start:end] != name:
                raise GptnlError(f"{path}: {row['id']}: span {start}:{end} is not {name!r}")
    return rows


def score_names(find: Callable[[str], list[pii.Finding]] = pii.find_names, path: Path = LETTERS) -> NameScores:
    """Exact-span precision and recall of `find` (the rules, or rules and an NER model) on the letters."""
    letters = load_letters(path)
    tp = found = gold = 0
    wrong, missed = [], []
    for row in letters:
        want = {(s, e) for s, e, _ in row["names"]}
        got = {(f.start, f.end) for f in find(row["text"])}
        tp += len(want & got)
        found, gold = found + len(got), gold + len(want)
        wrong += [f"{row['id']}: {row['text'][s:e]}" for s, e in sorted(got - want)]
        missed += [f"{row['id']}: {row['text'][s:e]}" for s, e in sorted(want - got)]
    return NameScores(letters=len(letters), gold=gold, found=found, true_positives=tp,
                      precision=tp / found if found else 1.0, recall=tp / gold if gold else 1.0,
                      false_positives=wrong, missed=missed)


def detector(rules: bool = True, ner=None) -> Callable[[str], list[pii.Finding]]:
    """What the corpus PII step finds as names: the rules, an NER model's findings where they overlap
    no rule finding, or both (`ner`: a `NerBackend`)."""
    model = None
    if ner is not None:
        from gptnl.ner import NameModel

        model = NameModel(ner)

    def find(text: str) -> list[pii.Finding]:
        found = pii.find_names(text) if rules else []
        for f in model.find(text) if model is not None else []:
            if not any(f.start < g.end and g.start < f.end for g in found):
                found.append(f)
        return sorted(found, key=lambda f: f.start)
    return find
