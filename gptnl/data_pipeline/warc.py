"""WARC and WET archives (`warcio`) as Documents, with damage reported instead of read past.

warcio reads a record cut short as a shorter record, prints a warning on stderr for a record
whose Content-Length is wrong, and stops at trailing garbage with an exception. Here each of
those becomes a malformed row naming the file and the byte offset: a damaged record is its own
row (whatever its type), and what cannot be parsed after the last good record is one row for the
rest of the file. Offsets are in the file as stored (compressed, for `.warc.gz`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from datatrove.data import Document
from warcio.archiveiterator import ArchiveIterator

from gptnl.config import SourceConfig
from gptnl.data_pipeline.extract import decode_html
from gptnl.data_pipeline.records import malformed, record_to_document, too_long

DOCUMENT_TYPES = ("conversion", "response", "resource")
HTML_TYPES = ("text/html", "application/xhtml+xml")


class _Archive(ArchiveIterator):
    """warcio's iterator, quiet: a wrong Content-Length is counted (`err_count`) and reported as a row."""

    INC_RECORD = ""

    def close(self):
        decompressor = self.reader.decompressor if self.reader else None
        self.gzip_unfinished = decompressor is not None and not getattr(decompressor, "eof", True)
        super().close()


def _damage(record, it: _Archive, errors_before: int) -> str | None:
    """Why a record that has been read to its end is damaged, or None."""
    length = record.rec_headers.get_header("Content-Length") if record.rec_headers else None
    if record.length is None or not (length or "").strip().isdigit():
        return f"record header cut short or invalid (Content-Length {length!r})"
    missing = getattr(record.raw_stream, "limit", 0)
    if missing:
        return f"record cut short ({record.length - missing} of {record.length} bytes)"
    if it.err_count > errors_before:
        return "record not followed by a blank line; its Content-Length is wrong"
    return None


def _text(src: SourceConfig, record, loc: str, body: bytes) -> Document:
    ctype = (record.http_headers.get_header("Content-Type") if record.http_headers
             else record.rec_headers.get_header("Content-Type")) or ""
    html = record.rec_type != "conversion" and any(t in ctype for t in HTML_TYPES)
    if record.rec_type != "conversion" and "text/plain" not in ctype and not html:
        return malformed(src, loc, f"{ctype or 'unknown'} content; only plain text and HTML are read")
    if html:
        text = decode_html(body)
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return malformed(src, loc, f"invalid UTF-8 at byte {exc.start}")
    rid = record.rec_headers.get_header("WARC-Record-ID") or loc
    doc = record_to_document(src, loc, {
        "id": rid.strip("<>"), "text": text, "url": record.rec_headers.get_header("WARC-Target-URI"),
        "created": record.rec_headers.get_header("WARC-Date")}, check_surrogates=html)
    if html and "malformed" not in doc.metadata:
        doc.metadata["html"] = True
    return doc


def warc_records(src: SourceConfig, path: Path, rel: str, max_record_bytes: int) -> Iterator[Document]:
    """The documents of one archive, numbered `rel:n` over document records and damaged ones."""
    n, damaged = 0, False
    with open(path, "rb") as fh:
        it = _Archive(fh)
        try:
            for record in it:
                offset, errors = it.offset, it.err_count
                body = b""
                wanted = record.rec_type in DOCUMENT_TYPES and (record.length or 0) <= max_record_bytes
                if wanted:
                    body = record.content_stream().read(max_record_bytes + 1)
                it.read_to_end()
                damage = _damage(record, it, errors)
                damaged = damage is not None
                if damage is None and record.rec_type not in DOCUMENT_TYPES:
                    continue
                n += 1
                loc = f"{rel}:{n}"
                if damage:
                    yield malformed(src, loc, f"damaged archive at byte {offset}: {damage}")
                elif not wanted or len(body) > max_record_bytes:
                    yield malformed(src, loc, too_long(record.length if not wanted else f"more than {max_record_bytes}",
                                                       max_record_bytes))
                else:
                    yield _text(src, record, loc, body)
        except Exception as exc:  # warcio raises several types for what it cannot parse
            yield malformed(src, f"{rel}:{n + 1}", f"damaged archive at byte {it.offset}: {_first_line(exc)}")
            return
    if getattr(it, "gzip_unfinished", False) and not damaged:  # else the last row already says so
        yield malformed(src, f"{rel}:{n + 1}", f"damaged archive at byte {it.offset}: gzip data cut short")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")
