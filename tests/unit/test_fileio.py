"""The one JSON Lines reader and writer: plain or gzip by the name, atomic, reproducible bytes."""

from __future__ import annotations

from gptnl.fileio import iter_jsonl, read_jsonl, write_jsonl

ROWS = [{"id": "a", "text": "Zeeën en één café"}, {"id": "b", "n": [1, 2]}]


def test_plain_and_gzip_round_trip_with_dutch_text(tmp_path):
    for name in ("rows.jsonl", "rows.jsonl.gz"):
        write_jsonl(tmp_path / name, ROWS)
        assert read_jsonl(tmp_path / name) == ROWS
    assert "Zeeën en één café" in (tmp_path / "rows.jsonl").read_text(encoding="utf-8")  # not \\u-escaped
    first = (tmp_path / "rows.jsonl.gz").read_bytes()
    write_jsonl(tmp_path / "rows.jsonl.gz", ROWS)
    assert (tmp_path / "rows.jsonl.gz").read_bytes() == first  # no timestamp in the gzip header


def test_blank_lines_are_skipped_and_reading_is_lazy(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    it = iter_jsonl(tmp_path / "x.jsonl")
    assert next(it) == {"a": 1} and list(it) == [{"a": 2}]
