"""Quality filters for Dutch: datatrove's Gopher quality and repetition rules with Dutch stop
words and a regex word tokeniser (datatrove's default spaCy tokeniser runs ~500 docs per CPU-second;
this one is ~10× faster and gave the same verdicts on a 3,000-document test)."""

from __future__ import annotations

import re

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.filters.c4_filters import C4QualityFilter
from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter
from datatrove.utils.word_tokenizers import WordTokenizer

from gptnl.config import QualityStep

# FineWeb-2's Dutch stop words (`nld_Latn`): a real Dutch text has several in any 50 words.
DUTCH_STOP_WORDS = tuple(QualityStep().stop_words)

_WORD = re.compile(r"\w+(?:['’\-]\w+)*|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^\s])")


class RegexWordTokenizer(WordTokenizer):
    def __init__(self):
        super().__init__("nl")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in _SENTENCE_END.split(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]


STEPS = ("quality", "repetition", "c4")


class PerLanguage(BaseFilter):
    """One quality step of a corpus that keeps several languages: each document is judged by the
    filter of its language (`lang`, set by the language step), built from that language's
    thresholds; refusals go to this step's one ledger writer."""

    def __init__(self, step: str, filters: dict[str, BaseFilter], exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.name = f"{next(iter(filters.values())).name} ({', '.join(filters)})"
        self.step, self.filters = step, filters

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filters[doc.metadata["lang"]].filter(doc)


def per_language_filters(by_language: dict[str, QualityStep], exclusion_writer_for) -> list:
    """`quality_filters` for several kept languages, step by step, each with its language's settings."""
    built = {lang: quality_filters(cfg, lambda step: None) for lang, cfg in by_language.items()}
    return [PerLanguage(step, {lang: filters[i] for lang, filters in built.items()},
                        exclusion_writer=exclusion_writer_for(step)) for i, step in enumerate(STEPS)]


def quality_filters(cfg: QualityStep, exclusion_writer_for) -> list:
    """Gopher quality, Gopher repetition, then C4's rules as FineWeb runs them (no terminal-punctuation
    rule) and with blank lines kept; `exclusion_writer_for(step)` gives each its ledger writer.
    C4's removal of any line that mentions "javascript" or an English policy phrase is left to the
    boilerplate step, which removes such lines only when they are short or a cookie wall: C4's rule
    would delete a whole article that is one line."""
    tok = RegexWordTokenizer()
    return [
        GopherQualityFilter(
            min_doc_words=cfg.min_doc_words, max_doc_words=cfg.max_doc_words,
            min_avg_word_length=cfg.min_avg_word_length, max_avg_word_length=cfg.max_avg_word_length,
            max_symbol_word_ratio=cfg.max_symbol_word_ratio, max_bullet_lines_ratio=cfg.max_bullet_lines_ratio,
            max_ellipsis_lines_ratio=cfg.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=cfg.max_non_alpha_words_ratio, min_stop_words=cfg.min_stop_words,
            stop_words=cfg.stop_words, language=tok, exclusion_writer=exclusion_writer_for("quality"),
        ),
        GopherRepetitionFilter(dup_line_frac=cfg.max_duplicate_line_fraction, top_n_grams=tuple(cfg.top_n_grams),
                               dup_n_grams=tuple(cfg.dup_n_grams), language=tok,
                               exclusion_writer=exclusion_writer_for("repetition")),
        C4QualityFilter(filter_no_terminal_punct=False, min_words_per_line=-1, filter_javascript=False,
                        filter_policy=False,
                        min_num_sentences=cfg.min_sentences, language=tok, exclusion_writer=exclusion_writer_for("c4")),
    ]
