"""Read the documents of a corpus dir (the document format of docs/data.md), one at a time.

A corpus dir holds JSONL or JSONL.gz files at its top level, or in a `documents/` folder when it
has one (the corpus pipeline's output; a corpus of several languages has a folder per language
there, `documents/nl/`, `documents/en/`, each a corpus dir of its own for `gptnl pack`). Files are
read in path order so every stage that reads the same dir sees the same documents in the same
order. A line that is not a document stops the read with its file and line: stages after the
pipeline must not guess what a broken line meant.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gptnl.errors import CorpusError

SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass(frozen=True)
class Document:
    id: str
    text: str


def corpus_files(corpus: Path) -> list[Path]:
    """The document files of a corpus dir (or the one file named), in the order they are read."""
    corpus = Path(corpus)
    if corpus.is_file():
        return [corpus]
    if not corpus.is_dir():
        raise CorpusError(f"{corpus}: corpus dir not found")
    root = corpus / "documents" if (corpus / "documents").is_dir() else corpus
    files = document_files(corpus) if root != corpus else \
        sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
    if not files:
        raise CorpusError(f"{root}: no .jsonl or .jsonl.gz files in this corpus dir")
    return files


def document_files(corpus: Path) -> list[Path]:
    """The pipeline's document files of a corpus dir: `documents/*.jsonl.gz`, and those of its
    per-language folders (`documents/<lang>/`), in path order."""
    root = Path(corpus) / "documents"
    if not root.is_dir():
        return []
    return sorted((p for pattern in ("*", "*/*") for p in root.glob(pattern)
                   if p.is_file() and p.name.endswith(SUFFIXES)), key=lambda p: p.relative_to(root).parts)


def _open(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")


def _parse(line: str, where: str) -> Document:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "text"):
        if key not in obj:
            raise CorpusError(f"{where}: document has no '{key}' field")
        if not isinstance(obj[key], str):
            raise CorpusError(f"{where}: '{key}' must be a string, got {type(obj[key]).__name__}")
    if not obj["id"]:
        raise CorpusError(f"{where}: 'id' is empty")
    return Document(id=obj["id"], text=obj["text"])


def iter_documents(corpus: Path) -> Iterator[Document]:
    """Every document of the corpus, streamed (never the whole corpus in memory)."""
    for path in corpus_files(corpus):
        yield from iter_file_documents(path)


def iter_file_documents(path: Path) -> Iterator[Document]:
    """The documents of one corpus file, in line order."""
    with _open(path) as fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, start=1):  # noqa: B007 - lineno used in errors
                if line.strip():
                    yield _parse(line, f"{path}:{lineno}")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}:{lineno + 1}: not valid UTF-8 ({exc.reason})") from None
        except (OSError, EOFError) as exc:
            raise CorpusError(f"{path}: cannot be read ({exc})") from None


def corpus_size(corpus: Path) -> int:
    """Bytes on disk of the corpus files; for progress bars."""
    return sum(p.stat().st_size for p in corpus_files(corpus))
