"""Readability of Dutch text: Flesch-Douma and the LiNT-style features a B1 check needs (word
frequency, sentence length, clause length).

Flesch-Douma (Douma 1960): 206.84 - 0.77 x syllables per 100 words - 0.93 x words per sentence.
Syllables are counted as Dutch vowel clusters (aa, ie, ui, ij, ooi…), a vowel outside a cluster
being a syllable of its own (bi-bli-o-theek, ide-eën): the usual rule-based count, right for
most Dutch words and wrong for some loans (mu-se-um counts 2). Word
frequency is the share of words in `evals/resources/basiswoorden.txt`, our own list of everyday
words, standing in for LiNT's SUBTLEX-NL frequencies, which cannot be shipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from gptnl.assets import asset

WORD_LIST = asset("evals", "resources", "basiswoorden.txt")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_VOWELS = set("aeiouyàáâäèéêëìíîïòóôöùúûü")
_CLUSTERS = ("aai", "ooi", "oei", "eeu", "ieu", "aa", "ee", "oo", "uu", "ie", "oe", "eu", "ui", "ei", "ij", "au",
             "ou", "ai", "oi")
# Clause boundaries: punctuation inside a sentence, and the conjunctions that open a new clause.
_CLAUSE = re.compile(r"[,;:()–—]|\b(?:en|maar|want|of|dus|omdat|doordat|zodat|als|wanneer|terwijl|nadat|voordat|"
                     r"totdat|hoewel|tenzij|indien|dat|die|wat|waar|waardoor|waarmee|waarin)\b", re.I)


def syllables(word: str) -> int:
    """Vowel clusters, longest first (aai, ooi, ieu, aa, ie, ui, ij…): each is one syllable, and
    vowels that form no cluster are syllables of their own (bi-bli-o-theek, ide-eën)."""
    w = word.lower()
    count, i = 0, 0
    while i < len(w):
        if w[i] in _VOWELS or w.startswith("ij", i):
            count += 1
            i += next(len(c) for c in (*_CLUSTERS, w[i]) if w.startswith(c, i))
        else:
            i += 1
    return max(1, count)


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if _WORD.search(s)]


def words(text: str) -> list[str]:
    return _WORD.findall(text)


@cache
def frequent_words() -> frozenset[str]:
    return frozenset(w.strip() for w in WORD_LIST.read_text(encoding="utf-8").splitlines() if w.strip())


@dataclass(frozen=True)
class Readability:
    words: int
    sentences: int
    syllables_per_100_words: float
    words_per_sentence: float
    words_per_clause: float
    frequent_share: float
    flesch_douma: float


def flesch_douma(syllables_per_100_words: float, words_per_sentence: float) -> float:
    return 206.84 - 0.77 * syllables_per_100_words - 0.93 * words_per_sentence


def measure(text: str) -> Readability | None:
    """None for a text without words (an empty answer has no readability)."""
    sents = sentences(text)
    ws = words(text)
    if not ws:
        return None
    clauses = sum(len([c for c in _CLAUSE.split(s) if c and words(c)]) for s in sents) or 1
    per_100 = 100 * sum(syllables(w) for w in ws) / len(ws)
    per_sentence = len(ws) / max(1, len(sents))
    common = frequent_words()
    return Readability(
        words=len(ws), sentences=len(sents), syllables_per_100_words=per_100, words_per_sentence=per_sentence,
        words_per_clause=len(ws) / clauses, frequent_share=sum(w.lower() in common for w in ws) / len(ws),
        flesch_douma=flesch_douma(per_100, per_sentence))
