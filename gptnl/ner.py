"""Person names by a local NER model: a Hugging Face token-classification folder or a spaCy
pipeline folder, named by path in the recipe (`pii.ner`). Off by default and never downloaded:
the folder must already be on disk. Used by the corpus PII step beside the rules of `gptnl.pii`.

Long texts go to the model in paragraph-sized chunks (a token-classification model sees at most
its maximum length), and only entities with a person label (and, for HF, a high enough score) that
hold a capital letter count, since a wrong finding removes text.
"""

from __future__ import annotations

import re
from pathlib import Path

from gptnl.config import NerBackend
from gptnl.errors import GptnlError
from gptnl.pii import NAME, Finding

CHUNK_CHARS = 1000


def chunks(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, str]]:
    """(offset, piece) cuts of `text` at line ends (or spaces) of at most about `size` characters."""
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = max(text.rfind("\n", start, end), text.rfind(" ", start, end))
            end = cut + 1 if cut > start else end
        out.append((start, text[start:end]))
        start = end
    return out


class NameModel:
    """`find(text)`: person-name findings of the model, in text order."""

    def __init__(self, cfg: NerBackend):
        self.cfg = cfg
        path = Path(cfg.path)
        if not path.is_dir():
            raise GptnlError(f"pii.ner.path {path}: no such folder (the NER model is never downloaded)")
        self._run = self._hf(path) if cfg.kind == "hf" else self._spacy(path)

    def _hf(self, path: Path):
        try:
            from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
        except ImportError:
            raise GptnlError("pii.ner.kind hf needs transformers: pip install 'gptnl[hf]'") from None
        try:
            model = AutoModelForTokenClassification.from_pretrained(path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise GptnlError(f"pii.ner.path {path}: not a token-classification model folder ({exc})") from None
        tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple",
                          device=-1)

        def run(pieces: list[str]):
            for _piece, ents in zip(pieces, tagger(pieces) if pieces else [], strict=True):
                yield [(e["start"], e["end"]) for e in ents
                       if e["entity_group"] in self.cfg.labels and e["score"] >= self.cfg.min_score]
        return run

    def _spacy(self, path: Path):
        try:
            import spacy
        except ImportError:
            raise GptnlError("pii.ner.kind spacy needs spaCy: pip install spacy") from None
        try:
            nlp = spacy.load(path)
        except (OSError, ValueError) as exc:
            raise GptnlError(f"pii.ner.path {path}: not a spaCy pipeline folder ({exc})") from None

        def run(pieces: list[str]):
            for doc in nlp.pipe(pieces):
                yield [(e.start_char, e.end_char) for e in doc.ents if e.label_ in self.cfg.labels]
        return run

    def find(self, text: str) -> list[Finding]:
        cut = chunks(text)
        found = []
        for (offset, piece), spans in zip(cut, self._run([p for _, p in cut]), strict=True):
            for start, end in spans:
                value = piece[start:end]
                lead = len(value) - len(value.lstrip())
                value = value.strip()
                if len(value) >= 2 and re.search(r"[^\W\d_]", value) and any(c.isupper() for c in value):
                    s = offset + start + lead
                    found.append(Finding(NAME, s, s + len(value), value))
        return sorted(found, key=lambda f: f.start)
