"""Read every source's files as datatrove Documents, and never lose a record.

Formats: JSONL (also gzipped), Parquet (one row a document), folders of .txt files (one file a
document, its path the id), and WARC/WET archives (`warc.py`). A record that is not a usable
document (`records.py`: bad JSON, not an object, no `text` or `id`, wrong types, invalid UTF-8,
empty text) still becomes a Document, marked `malformed` with its file and position, so the first
gate refuses it into the ledger instead of the run crashing or dropping it. So does a record
longer than `reader.max_record_bytes` (read in bounded pieces, so a gzip bomb costs time, not
memory), and the damaged rest of a file (a truncated `.gz`, garbage after the last record): one row
naming the file and the offset, and the build goes on with the next file. Files are found by
`inputs.py` and dealt to tasks round-robin in a fixed order, so reruns see the same split.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gptnl.config import ReaderStep, SourceConfig
from gptnl.data_pipeline.inputs import SUFFIXES, discover
from gptnl.data_pipeline.records import malformed, record_to_document, to_document, too_long
from gptnl.data_pipeline.warc import warc_records

__all__ = ["SUFFIXES", "SourceReader", "read_file", "record_to_document", "source_files", "to_document"]
_CHUNK = 1 << 20


def source_files(sources: list[SourceConfig], base: Path) -> list[tuple[SourceConfig, Path]]:
    """(source, file) pairs in a fixed order; see `inputs.discover` for what is skipped and why."""
    return discover(sources, base)[0]


def _bounded_lines(fh, limit: int) -> Iterator[tuple[bytes | None, int]]:
    """(line, size) for each line of a binary file; line is None when longer than `limit` bytes,
    and then only its size is known: it is read in 1 MiB pieces and dropped."""
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, len(line)
            continue
        size = len(line)
        while line and not line.endswith(b"\n"):
            line = fh.readline(_CHUNK)
            size += len(line)
        yield None, size


def _jsonl_records(src: SourceConfig, path: Path, rel: str, limit: int) -> Iterator[Document]:
    lineno, offset = 0, 0
    gz = path.name.endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as fh:
            for lineno, (raw, size) in enumerate(_bounded_lines(fh, limit + 2), start=1):  # + "\r\n"
                offset += size
                if raw is None:
                    yield malformed(src, f"{rel}:{lineno}", too_long(size, limit))
                elif raw.strip():
                    raw = raw.rstrip(b"\r\n")
                    yield (to_document(src, f"{rel}:{lineno}", raw) if len(raw) <= limit
                           else malformed(src, f"{rel}:{lineno}", too_long(len(raw), limit)))
    except (OSError, EOFError, zlib.error) as exc:  # gzip: BadGzipFile (an OSError), cut short, bad data
        where = f"after {offset} {'uncompressed ' if gz else ''}bytes (line {lineno + 1})"
        yield malformed(src, f"{rel}:{lineno + 1}", f"damaged {'gzip ' if gz else ''}file {where}: {exc}")


def _parquet_records(src: SourceConfig, path: Path, rel: str, limit: int) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        yield malformed(src, f"{rel}:1", f"unreadable Parquet file ({exc})")
        return
    row = 0
    try:
        for batch in table.iter_batches():
            for obj in batch.to_pylist():
                row += 1
                text = obj.get("text")
                if isinstance(text, str) and len(text) > limit // 4 and len(text.encode("utf-8")) > limit:
                    yield malformed(src, f"{rel}:{row}", too_long(len(text.encode("utf-8")), limit))
                else:
                    yield record_to_document(src, f"{rel}:{row}", obj)
    except Exception as exc:  # a damaged page or column chunk below the first row
        yield malformed(src, f"{rel}:{row + 1}", f"damaged Parquet file after row {row}: {exc}")


def _txt_record(src: SourceConfig, path: Path, rel: str, limit: int) -> Iterator[Document]:
    size = os.path.getsize(path)
    if size > limit:
        yield malformed(src, f"{rel}:1", too_long(size, limit))
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        yield malformed(src, f"{rel}:1", f"invalid UTF-8 at byte {exc.start}")
        return
    yield record_to_document(src, f"{rel}:1", {"id": rel, "text": text})


READERS = {"jsonl": _jsonl_records, "parquet": _parquet_records, "txt": _txt_record, "warc": warc_records}


def read_file(src: SourceConfig, path: Path, rel: str, max_record_bytes: int) -> Iterator[Document]:
    """Every record of one file as a Document. A file that fails in a way its format reader does not
    foresee (it vanished, an I/O error) ends with one malformed row after its last record."""
    last = 0
    try:
        for doc in READERS[src.format](src, path, rel, max_record_bytes):
            last = int(doc.metadata["location"].rpartition(":")[2])
            yield doc
    except Exception as exc:
        yield malformed(src, f"{rel}:{last + 1}", f"unreadable file after record {last}: {type(exc).__name__}: {exc}")


class SourceReader(PipelineStep):
    name = "📖 sources"
    type = "📖 - READER"

    def __init__(self, sources: list[SourceConfig], base: Path, settings: ReaderStep | None = None):
        super().__init__()
        self.files = [(src, str(path)) for src, path in source_files(sources, base)]
        self.base = os.path.abspath(base)
        self.max_record_bytes = (settings or ReaderStep()).max_record_bytes

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for i, (src, path) in enumerate(self.files):
            if i % world_size != rank:
                continue
            rel = os.path.relpath(path, self.base) if path.startswith(self.base + os.sep) else path
            for doc in read_file(src, Path(path), rel, self.max_record_bytes):
                self.stat_update("input", f"input/{src.name}")
                yield doc
