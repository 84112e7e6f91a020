"""Read every source's files as datatrove Documents, and never lose a line.

A line that is not a usable document (bad JSON, not an object, no `text` or `id`, wrong types,
invalid UTF-8, empty text) still becomes a Document, marked `malformed` with its file and line,
so that the first gate refuses it into the ledger instead of the run crashing or dropping it.
Files are dealt to tasks round-robin in a fixed order, so reruns see the same split.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gptnl.config import SourceConfig

PASSED_FIELDS = ("url", "author", "created", "retrieved")


def source_files(sources: list[SourceConfig], base: Path) -> list[tuple[SourceConfig, Path]]:
    """(source, file) pairs in a fixed order; a source's `path` is a glob, relative to `base` or absolute."""
    files = []
    for src in sources:
        for name in sorted(glob.glob(os.path.join(base, src.path), recursive=True)):
            path = Path(name)
            if path.is_file() and path.name.endswith((".jsonl", ".jsonl.gz")):
                files.append((src, path))
    return files


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def _malformed(src: SourceConfig, location: str, what: str) -> Document:
    return Document(text="", id=location, metadata={"source": src.name, "location": location, "malformed": what})


def to_document(src: SourceConfig, location: str, raw: bytes) -> Document:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _malformed(src, location, f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return _malformed(src, location, f"not valid JSON: {exc.msg}")
    if not isinstance(obj, dict):
        return _malformed(src, location, f"expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "text"):
        if key not in obj:
            return _malformed(src, location, f"no '{key}' field")
        if not isinstance(obj[key], str):
            return _malformed(src, location, f"'{key}' must be a string, got {type(obj[key]).__name__}")
    if not obj["id"].strip() or not obj["text"].strip():
        return _malformed(src, location, "empty 'id'" if not obj["id"].strip() else "empty 'text'")
    licence = obj.get(src.licence_field)
    meta = {
        "source": src.name,
        "location": location,
        "licence": licence if isinstance(licence, str) and licence.strip() else src.licence,
        "tdm_reservation": bool(obj.get("tdm_reservation", False)) or src.tdm_reservation,
        **{k: obj.get(k) for k in PASSED_FIELDS},
    }
    meta["retrieved"] = meta["retrieved"] or src.retrieved
    return Document(text=obj["text"], id=obj["id"], metadata=meta)


class SourceReader(PipelineStep):
    name = "📖 sources"
    type = "📖 - READER"

    def __init__(self, sources: list[SourceConfig], base: Path):
        super().__init__()
        self.files = [(src, str(path)) for src, path in source_files(sources, base)]
        self.base = str(base)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for i, (src, path) in enumerate(self.files):
            if i % world_size != rank:
                continue
            rel = str(Path(path).relative_to(self.base)) if path.startswith(self.base) else path
            for lineno, raw in enumerate(_lines(Path(path)), start=1):
                if not raw.strip():
                    continue
                doc = to_document(src, f"{rel}:{lineno}", raw.rstrip(b"\r\n"))
                self.stat_update("input", f"input/{src.name}")
                yield doc
