"""What a built corpus holds: documents, words and (with the recipe's `count_tokens_with`) a
tokenizer's tokens per source, licence and language, read from the kept documents themselves (one
streamed pass), for `stats.json`, the card and mixture planning. Words are runs of letters and
digits; tokens are the named tokenizer's, without special tokens (the model's own tokenizer gives
the figures a mixture's weights are planned in)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from gptnl import tokenizer as tokenizer_mod
from gptnl.artefacts import Composition, CompositionRow, TokenizerRef
from gptnl.corpus import document_files
from gptnl.fileio import iter_jsonl

_WORD = re.compile(r"\w+")
BATCH = 256  # documents per encode_batch call


def composition(corpus: Path, tokenizer_dir: Path | None = None) -> Composition:
    """Rows of {source, licence, lang, documents, words[, tokens]}, the same per language, and the
    tokenizer counted with (or None)."""
    tok = tokenizer_mod.load(tokenizer_dir) if tokenizer_dir is not None else None
    fields = ("documents", "words", "tokens") if tok else ("documents", "words")
    rows: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(fields, 0))

    def count(batch: list[dict]) -> None:
        encoded = tok.tokenizer.encode_batch_fast([d["text"] for d in batch], add_special_tokens=False) if tok \
            else [None] * len(batch)
        for doc, enc in zip(batch, encoded, strict=True):
            c = rows[(doc["source"], doc["licence"], doc.get("lang") or "unknown")]
            c["documents"] += 1
            c["words"] += sum(1 for _ in _WORD.finditer(doc["text"]))
            if enc is not None:
                c["tokens"] += len(enc.ids)

    for path in document_files(corpus):
        batch: list[dict] = []
        for doc in iter_jsonl(path):
            batch.append(doc)
            if len(batch) == BATCH:
                count(batch)
                batch = []
        count(batch)
    languages: dict[str, dict[str, int]] = {}
    for (_, _, lang), c in rows.items():
        entry = languages.setdefault(lang, dict.fromkeys(fields, 0))
        for k in fields:
            entry[k] += c[k]
    return Composition(
        rows=[CompositionRow(source=s, licence=lic, lang=lang, **c) for (s, lic, lang), c in sorted(rows.items())],
        languages=dict(sorted(languages.items())),
        tokenizer=TokenizerRef(path=str(tok.path), checksum=tok.checksum) if tok else None)
