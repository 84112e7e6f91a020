"""The ledger's assembly: an external sort of the per-step parts (runs of RUN_ROWS rows merged), so
memory stays flat at any corpus size; the same rows in the same order as sorting them all at once;
an input counted twice or missing stops it, and then no ledger file appears."""

from __future__ import annotations

import random

import pytest

from gptnl.data_pipeline import ledger
from gptnl.errors import GptnlError
from gptnl.fileio import read_jsonl, write_jsonl


def rows(n: int, source: str = "s") -> list[dict]:
    return [{"id": f"{source}{i}", "source": source, "location": f"f{i % 7}.jsonl:{i}",
             "outcome": "kept" if i % 3 else "refused", "licence": "CC0-1.0", "step": "" if i % 3 else "quality",
             "reason": "" if i % 3 else "too short (12 words)"} for i in range(n)]


def write_parts(parts, all_rows, k):
    parts.mkdir()
    shuffled = all_rows[:]
    random.Random(1).shuffle(shuffled)
    for i in range(k):
        write_jsonl(parts / f"{i:03d}.jsonl", shuffled[i::k])


def test_the_merged_ledger_equals_one_big_sort(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger, "RUN_ROWS", 50)  # many runs from few rows,
    monkeypatch.setattr(ledger, "FAN_IN", 4)  # merged in rounds
    everything = rows(1000) + rows(300, "t")
    write_parts(tmp_path / "parts", everything, 4)
    out = tmp_path / "corpus"
    out.mkdir()
    counts = ledger.assemble(tmp_path / "parts", {"s": 1000, "t": 300}, out)
    assert read_jsonl(out / ledger.LEDGER) == sorted(everything, key=ledger._location_key)
    assert counts == {"s": {"inputs": 1000, "kept": 666, "refused": 334}, "t": {"inputs": 300, "kept": 200,
                                                                               "refused": 100}}
    assert not list(out.glob(".ledger-*")) and not list(out.glob(".*.tmp"))  # runs and temp file gone
    stats = ledger.corpus_stats(iter(read_jsonl(out / ledger.LEDGER)), counts, {}, "placeholder")
    assert stats.refused_by_step == {"quality": {"too short": 434}} and stats.licences == {"CC0-1.0": 866}


@pytest.mark.parametrize(("extra", "inputs", "message"), [
    (rows(1)[:1], {"s": 100}, "an input recorded twice"),
    ([], {"s": 101}, "101 documents read, 66 kept \\+ 34 refused = 100"),
])
def test_a_broken_count_stops_assembly_and_writes_no_ledger(tmp_path, monkeypatch, extra, inputs, message):
    monkeypatch.setattr(ledger, "RUN_ROWS", 30)
    write_parts(tmp_path / "parts", rows(100) + extra, 3)
    out = tmp_path / "corpus"
    out.mkdir()
    with pytest.raises(GptnlError, match=message):
        ledger.assemble(tmp_path / "parts", inputs, out)
    assert not (out / ledger.LEDGER).exists() and not list(out.iterdir())
