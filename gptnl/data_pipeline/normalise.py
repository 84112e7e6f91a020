"""Text normalisation before any filter looks at a document: ftfy (mojibake, HTML entities,
odd quotes left alone), Unicode NFC, and whitespace (runs of spaces and tabs become one space,
lines are stripped, at most one empty line between paragraphs, no zero-width characters)."""

from __future__ import annotations

import re
import unicodedata

import ftfy
from datatrove.pipeline.formatters.base import BaseFormatter

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    text = ftfy.fix_text(text, uncurl_quotes=False, normalization="NFC")
    text = unicodedata.normalize("NFC", _ZERO_WIDTH.sub("", text))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


class Normaliser(BaseFormatter):
    name = "🧽 normalise"

    def format(self, text: str) -> str:
        return normalise(text)
