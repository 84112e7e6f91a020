"""The reader: every record of every file becomes a Document, a malformed one naming the file and
position when it cannot be used; bombs, deep nesting, damaged gzip and WARC files, symlink loops
and unreadable paths never crash it, hold it in memory or go unreported."""

import gzip
import io
import json
import os
import socket
import tracemalloc

import pytest
from warcio.warcwriter import WARCWriter

from gptnl.config import SourceConfig
from gptnl.data_pipeline.inputs import discover
from gptnl.data_pipeline.reader import read_file

LIMIT = 8 * 1024 * 1024
GOOD = {"id": "a", "text": "De IJssel stroomt van Westervoort naar Kampen."}


def source(path="*.jsonl", fmt="jsonl", name="s"):
    return SourceConfig(name=name, path=path, format=fmt, licence="CC0-1.0", publisher="p", url="u", retrieved="x")


def read(path, fmt="jsonl", limit=LIMIT):
    return [(d.metadata["location"], d.metadata.get("malformed")) for d in
            read_file(source(fmt=fmt), path, path.name, limit)]


def jsonl(tmp_path, lines: list[bytes], name="in.jsonl"):
    path = tmp_path / name
    payload = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
    return path


def test_a_line_longer_than_the_limit_is_one_row_and_the_next_line_is_read(tmp_path):
    long = json.dumps({"id": "x", "text": "a" * 5000}).encode()
    path = jsonl(tmp_path, [long, json.dumps(GOOD).encode()])
    rows = read(path, limit=2048)
    assert rows == [("in.jsonl:1", f"record of {len(long) + 1} bytes; the limit is 2048 (reader.max_record_bytes)"),
                    ("in.jsonl:2", None)]


def test_a_gzip_bomb_is_read_in_bounded_memory(tmp_path):
    """200 MB without a newline, from a file of 200 kB: one row, and Python never holds more than
    a few pieces of it (tracemalloc sees every bytes object the reader makes)."""
    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(json.dumps(GOOD).encode() + b"\n" + b'{"id": "b", "text": "')
        for _ in range(200):
            fh.write(b"a" * (1 << 20))
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        rows = read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows[0] == ("bomb.jsonl.gz:1", None)
    assert rows[1][0] == "bomb.jsonl.gz:2" and rows[1][1].startswith("record of 209715221 bytes; the limit is")
    assert peak < 3 * LIMIT, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("line, why", [
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deeply"),
    (b'{"id": "a", "text": "t", "n": ' + b"7" * 5000 + b"}",
     "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"),
    (b'{"id": "a", "text": "kapot \\ud800 teken"}', "'text' holds a lone surrogate (U+D800) at character 6"),
    (b'{"id": "\\uDC00", "text": "t"}', "'id' holds a lone surrogate (U+DC00) at character 0"),
    (b'{"id": "a", "text": "t", "licence": "CC0\\ud83d"}', "'licence' holds a lone surrogate (U+D83D) at character 3"),
    (b'{"id": "a", "text": "emoji \\ud83d\\ude00 is fine"}', None),
])
def test_any_parse_or_convert_failure_is_that_records_row(tmp_path, line, why):
    assert read(jsonl(tmp_path, [line, json.dumps(GOOD).encode()])) == [("in.jsonl:1", why), ("in.jsonl:2", None)]


def test_a_truncated_gzip_gives_its_lines_then_one_row_naming_file_and_offset(tmp_path):
    lines = [json.dumps({**GOOD, "id": f"d{i}", "text": f"tekst {i} " * 50}).encode() for i in range(200)]
    path = jsonl(tmp_path, lines, "in.jsonl.gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rows = read(path)
    *good, last = rows
    assert good and all(why is None for _, why in good)
    n = len(good)
    assert last[0] == f"in.jsonl.gz:{n + 1}"
    assert last[1] == (f"damaged gzip file after {sum(len(x) + 1 for x in lines[:n])} uncompressed bytes "
                       f"(line {n + 1}): Compressed file ended before the end-of-stream marker was reached")


def test_garbage_after_a_gzip_stream_is_one_row(tmp_path):
    path = jsonl(tmp_path, [json.dumps(GOOD).encode()], "in.jsonl.gz")
    path.write_bytes(path.read_bytes() + b"trailing garbage")
    rows = read(path)
    assert rows[0] == ("in.jsonl.gz:1", None)
    assert rows[1][0] == "in.jsonl.gz:2" and rows[1][1].startswith(
        f"damaged gzip file after {len(json.dumps(GOOD)) + 1} uncompressed bytes (line 2): Not a gzipped file")


def test_a_file_that_is_not_gzip_at_all_is_one_row(tmp_path):
    (tmp_path / "x.jsonl.gz").write_bytes(b'{"id": "a", "text": "not compressed"}\n')
    assert read(tmp_path / "x.jsonl.gz") == [("x.jsonl.gz:1", "damaged gzip file after 0 uncompressed bytes "
                                                               "(line 1): Not a gzipped file (b'{\"')")]


def warc_bytes(texts, gz=False) -> bytes:
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gz)
    for i, text in enumerate(texts):
        writer.write_record(writer.create_warc_record(f"https://x.example/{i}", "conversion",
                                                      payload=io.BytesIO(text.encode()),
                                                      warc_content_type="text/plain"))
    return buf.getvalue()


TEXTS = [f"Pagina {i}: de rivier stroomt langs de stad en de uiterwaarden. " * 8 for i in range(3)]


def test_a_warc_record_cut_short_is_a_row_with_its_offset(tmp_path):
    data = warc_bytes(TEXTS)
    path = tmp_path / "c.warc"
    path.write_bytes(data[:-100])
    rows = read(path, "warc")
    third = data.index(b"WARC/1.0", data.index(b"WARC/1.0", 1) + 1)
    assert rows[:2] == [("c.warc:1", None), ("c.warc:2", None)]
    assert rows[2][0] == "c.warc:3" and rows[2][1].startswith(f"damaged archive at byte {third}: record cut short (")


def test_trailing_garbage_after_a_warc_is_a_row_with_its_offset(tmp_path):
    data = warc_bytes(TEXTS)
    path = tmp_path / "g.warc"
    path.write_bytes(data + b"this is not a record\r\n\r\n")
    assert read(path, "warc")[3] == (
        "g.warc:4", f"damaged archive at byte {len(data)}: ArchiveLoadFailed: Invalid WARC record, first line: "
        "this is not a record")


def test_a_wrong_content_length_is_a_row(tmp_path):
    data = warc_bytes(TEXTS[:2])
    second = data.index(b"WARC/1.0", 1)
    path = tmp_path / "w.warc"
    path.write_bytes(data[:second - 40] + b"EXTRA BYTES IN THE BODY" + data[second - 40:])
    rows = read(path, "warc")
    assert rows[0] == ("w.warc:1", "damaged archive at byte 0: record not followed by a blank line; "
                                   "its Content-Length is wrong")


@pytest.mark.parametrize("gz", [True, False])
def test_every_truncation_of_a_warc_is_reported_or_ends_on_a_record_boundary(tmp_path, gz):
    """Cut anywhere: no exception, no document with part of its text, and a damage row unless the
    cut falls between records (or inside the blank lines and gzip trailer that end one)."""
    members = [warc_bytes([t], gz=gz) for t in TEXTS]
    data, starts = b"".join(members), [sum(len(m) for m in members[:i]) for i in range(len(members))]
    path = tmp_path / ("t.warc.gz" if gz else "t.warc")
    for cut in range(1, len(data), 3):
        path.write_bytes(data[:cut])
        docs = list(read_file(source(fmt="warc"), path, path.name, LIMIT))
        damaged = [d.metadata["malformed"] for d in docs if "malformed" in d.metadata]
        assert [d.text for d in docs if "malformed" not in d.metadata] == TEXTS[:len(docs) - len(damaged)], cut
        if damaged:
            assert len(damaged) == 1 and docs[-1].metadata["malformed"].startswith("damaged archive at byte"), cut
        else:
            assert len(docs) == sum(1 for s in starts if s < cut), (cut, len(docs))


def test_a_warc_record_over_the_limit_is_a_row_and_is_not_read(tmp_path):
    path = tmp_path / "big.warc"
    path.write_bytes(warc_bytes(["x" * 5000, "kort"]))
    assert read(path, "warc", limit=2048) == [
        ("big.warc:1", "record of 5000 bytes; the limit is 2048 (reader.max_record_bytes)"), ("big.warc:2", None)]


def test_a_symlink_loop_under_a_double_star_counts_each_file_once(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "self").symlink_to(".")
    files, skipped = discover([source("**/*.jsonl")], tmp_path)
    assert [str(p) for _, p in files] == [str(tmp_path / "a" / "b" / "x.jsonl")]
    assert skipped == []


def test_a_file_reached_by_two_paths_or_two_sources_is_read_once(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    files, skipped = discover([source("*/x.jsonl"), source("real/*.jsonl", name="t")], tmp_path)
    assert [(s.name, p.name) for s, p in files] == [("s", "x.jsonl")]
    assert {(s.source, s.path, s.reason) for s in skipped} == {
        ("s", str(tmp_path / "link" / "x.jsonl"), f"the same file as {tmp_path / 'real' / 'x.jsonl'}"),
        ("t", str(tmp_path / "real" / "x.jsonl"), f"the same file as {tmp_path / 'real' / 'x.jsonl'}")}


def test_folders_broken_links_fifos_and_sockets_are_skipped_with_their_reason(tmp_path):
    (tmp_path / "good.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "folder.jsonl").mkdir()
    (tmp_path / "broken.jsonl").symlink_to(tmp_path / "missing.jsonl")
    os.mkfifo(tmp_path / "fifo.jsonl")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.jsonl"))
    (tmp_path / "notes.md").write_text("not data")
    try:
        files, skipped = discover([source("*")], tmp_path)
    finally:
        sock.close()
    assert [p.name for _, p in files] == ["good.jsonl"]
    assert {os.path.basename(s.path): s.reason for s in skipped} == {
        "folder.jsonl": "a folder, not a file", "broken.jsonl": "broken symbolic link",
        "fifo.jsonl": "a FIFO, not a regular file", "sock.jsonl": "a socket, not a regular file",
        "notes.md": "not a jsonl file (.jsonl, .jsonl.gz)"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode; FIFOs and sockets cover "
                                              "the unreadable case there")
def test_an_unreadable_file_is_skipped_with_its_reason(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    path.chmod(0)
    files, skipped = discover([source()], tmp_path)
    assert files == [] and [(s.path, s.reason) for s in skipped] == [(str(path), "cannot be read (Permission denied)")]


def test_a_file_name_that_is_not_utf8_is_skipped(tmp_path):
    name = os.fsdecode(b"caf\xe9.jsonl")
    (tmp_path / name).write_text(json.dumps(GOOD) + "\n")
    files, skipped = discover([source()], tmp_path)
    assert files == [] and [s.reason for s in skipped] == ["its name is not valid UTF-8"]
    assert skipped[0].path.endswith("caf\\udce9.jsonl")
