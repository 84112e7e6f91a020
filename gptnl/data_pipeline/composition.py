"""What a built corpus holds: documents and words per source, licence and language, read from the
kept documents themselves (one streamed pass), for `stats.json`, the card and mixture planning.
Words are runs of letters and digits, as the quality step counts them; model tokens depend on the
tokenizer and are counted by `gptnl pack` (its manifest, per split)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from gptnl.corpus import document_files
from gptnl.fileio import iter_jsonl

_WORD = re.compile(r"\w+")


def composition(corpus: Path) -> dict:
    """{"rows": [{source, licence, lang, documents, words}], "languages": {lang: {documents, words}}}."""
    rows: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for path in document_files(corpus):
        for doc in iter_jsonl(path):
            counts = rows[(doc["source"], doc["licence"], doc.get("lang") or "unknown")]
            counts[0] += 1
            counts[1] += sum(1 for _ in _WORD.finditer(doc["text"]))
    languages: dict[str, dict[str, int]] = {}
    for (_, _, lang), (docs, words) in rows.items():
        entry = languages.setdefault(lang, {"documents": 0, "words": 0})
        entry["documents"] += docs
        entry["words"] += words
    return {"rows": [{"source": s, "licence": lic, "lang": lang, "documents": d, "words": w}
                     for (s, lic, lang), (d, w) in sorted(rows.items())],
            "languages": dict(sorted(languages.items()))}
