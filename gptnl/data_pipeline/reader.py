"""Read every source's files as datatrove Documents, and never lose a record.

Formats: JSONL (also gzipped), Parquet (one row a document), folders of .txt files (one file a
document, its path the id), and WARC/WET archives (`warcio`; plain-text `conversion` records and
`text/plain` responses as they are; HTML responses marked for `HtmlExtractor`; other types refused). A record
that is not a usable document (bad JSON, not an object, no `text` or `id`, wrong types, invalid
UTF-8, empty text) still becomes a Document, marked `malformed` with its file and position, so the
first gate refuses it into the ledger instead of the run crashing or dropping it. Files are dealt
to tasks round-robin in a fixed order, so reruns see the same split.
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
from gptnl.data_pipeline.extract import decode_html

PASSED_FIELDS = ("url", "author", "created", "retrieved")
SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz"), "parquet": (".parquet",), "txt": (".txt",),
            "warc": (".warc", ".warc.gz", ".wet", ".wet.gz")}


def source_files(sources: list[SourceConfig], base: Path) -> list[tuple[SourceConfig, Path]]:
    """(source, file) pairs in a fixed order; a source's `path` is a glob, relative to `base` or absolute."""
    files = []
    for src in sources:
        for name in sorted(glob.glob(os.path.join(base, src.path), recursive=True)):
            path = Path(name)
            if path.is_file() and path.name.endswith(SUFFIXES[src.format]):
                files.append((src, path))
    return files


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def _malformed(src: SourceConfig, location: str, what: str) -> Document:
    return Document(text="", id=location, metadata={"source": src.name, "location": location, "malformed": what})


def to_document(src: SourceConfig, location: str, raw: bytes) -> Document:
    """A JSONL line as a Document (or a malformed one saying why)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _malformed(src, location, f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return _malformed(src, location, f"not valid JSON: {exc.msg}")
    return record_to_document(src, location, obj)


def record_to_document(src: SourceConfig, location: str, obj) -> Document:
    """A parsed record (a JSON object, a Parquet row) as a Document, or a malformed one."""
    if not isinstance(obj, dict):
        return _malformed(src, location, f"expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "text"):
        if key not in obj:
            return _malformed(src, location, f"no '{key}' field")
        if not isinstance(obj[key], str):
            return _malformed(src, location, f"'{key}' must be a string, got {type(obj[key]).__name__}")
    if not obj["id"].strip() or not obj["text"].strip():
        return _malformed(src, location, "empty 'id'" if not obj["id"].strip() else "empty 'text'")
    for key in PASSED_FIELDS:  # later steps match urls against the blocklist and write dates into the card
        if obj.get(key) is not None and not isinstance(obj[key], str):
            return _malformed(src, location, f"'{key}' must be a string, got {type(obj[key]).__name__}")
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


def _jsonl_records(src: SourceConfig, path: Path, rel: str) -> Iterator[Document]:
    for lineno, raw in enumerate(_lines(path), start=1):
        if raw.strip():
            yield to_document(src, f"{rel}:{lineno}", raw.rstrip(b"\r\n"))


def _parquet_records(src: SourceConfig, path: Path, rel: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield _malformed(src, f"{rel}:1", f"unreadable Parquet file ({exc})")
        return
    row = 0
    for batch in table.iter_batches():
        for obj in batch.to_pylist():
            row += 1
            yield record_to_document(src, f"{rel}:{row}", obj)


def _txt_record(src: SourceConfig, path: Path, rel: str) -> Iterator[Document]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        yield _malformed(src, f"{rel}:1", f"invalid UTF-8 at byte {exc.start}")
        return
    yield record_to_document(src, f"{rel}:1", {"id": rel, "text": text})


def _warc_records(src: SourceConfig, path: Path, rel: str) -> Iterator[Document]:
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as fh:
        n = 0
        for record in ArchiveIterator(fh):
            if record.rec_type not in ("conversion", "response", "resource"):
                continue
            n += 1
            url = record.rec_headers.get_header("WARC-Target-URI")
            rid = record.rec_headers.get_header("WARC-Record-ID") or f"{rel}:{n}"
            ctype = (record.http_headers.get_header("Content-Type") if record.http_headers
                     else record.rec_headers.get_header("Content-Type")) or ""
            body = record.content_stream().read()
            html = record.rec_type != "conversion" and any(t in ctype for t in HTML_TYPES)
            if record.rec_type != "conversion" and "text/plain" not in ctype and not html:
                yield _malformed(src, f"{rel}:{n}", f"{ctype or 'unknown'} content; only plain text and HTML are read")
                continue
            if html:
                text = decode_html(body)
            else:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield _malformed(src, f"{rel}:{n}", f"invalid UTF-8 at byte {exc.start}")
                    continue
            doc = record_to_document(src, f"{rel}:{n}", {
                "id": rid.strip("<>"), "text": text, "url": url,
                "created": record.rec_headers.get_header("WARC-Date")})
            if html and "malformed" not in doc.metadata:
                doc.metadata["html"] = True
            yield doc


HTML_TYPES = ("text/html", "application/xhtml+xml")
READERS = {"jsonl": _jsonl_records, "parquet": _parquet_records, "txt": _txt_record, "warc": _warc_records}


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
            for doc in READERS[src.format](src, Path(path), rel):
                self.stat_update("input", f"input/{src.name}")
                yield doc
