"""The ledger: one row per input document — kept, or refused by which step and why.

Rows are written while the pipeline runs, by each filter's exclusion writer (refused) and by a
writer after the last step (kept), one file per step and task. `assemble` merges them (an external
sort, so memory stays flat at any corpus size), proves that every input line of every source ended
in exactly one row, and fails loudly if not.
"""

from __future__ import annotations

import heapq
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from datatrove.data import Document

from gptnl.artefacts import CorpusStats
from gptnl.errors import GptnlError
from gptnl.fileio import iter_jsonl, jsonl_text, jsonl_writer, read_jsonl, write_jsonl

LEDGER = "ledger.jsonl.gz"


class LedgerRow:
    """A JsonlWriter adapter (bound as a method, hence `writer`) that writes a ledger row."""

    def __init__(self, step: str, outcome: str = "refused", default_reason: str = ""):
        self.step, self.outcome, self.default_reason = step, outcome, default_reason

    def __call__(self, writer, doc: Document) -> dict:
        return {
            "id": doc.id,
            "source": doc.metadata["source"],
            "location": doc.metadata["location"],
            "outcome": self.outcome,
            "licence": doc.metadata.get("licence"),
            "step": self.step if self.outcome == "refused" else "",
            "reason": (doc.metadata.get("refusal") or doc.metadata.get("filter_reason") or self.default_reason)
            if self.outcome == "refused" else "",
        }


def refuse(doc: Document, category: str, detail: str = "") -> tuple[bool, str]:
    """A filter's refusal: datatrove counts the `category` (few distinct values, so its stats stay
    small); the ledger row gets the category with the detail that names this document's case."""
    doc.metadata["refusal"] = f"{category} ({detail})" if detail else category
    return False, category


def _location_key(row: dict) -> tuple:
    file, _, line = row["location"].rpartition(":")
    return row["source"], file, int(line) if line.isdigit() else 0


def read_parts(parts_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(parts_dir).glob("*.jsonl")):
        rows += read_jsonl(path)
    return rows


RUN_ROWS = 20_000  # rows sorted in memory at a time (about 30 MB)
FAN_IN = 128  # runs merged at once (open files); more runs are merged in rounds first


def _sorted_runs(parts_dir: Path, tmp: Path) -> list[Path]:
    """The parts cut into runs of at most RUN_ROWS rows, each sorted by location (an external sort)."""
    runs: list[Path] = []
    chunk: list[dict] = []

    def flush() -> None:
        if chunk:
            run = tmp / f"run-{len(runs):05d}.jsonl"
            run.write_text(jsonl_text(sorted(chunk, key=_location_key)), encoding="utf-8")
            runs.append(run)
            chunk.clear()

    for path in sorted(Path(parts_dir).glob("*.jsonl")):
        for row in iter_jsonl(path):
            chunk.append(row)
            if len(chunk) >= RUN_ROWS:
                flush()
    flush()
    while len(runs) > FAN_IN:  # a billion documents make 50,000 runs: merge them in rounds
        merged = []
        for i in range(0, len(runs), FAN_IN):
            group = runs[i:i + FAN_IN]
            run = tmp / f"round-{len(merged):05d}-{group[0].name}"
            with jsonl_writer(run) as write:
                for row in heapq.merge(*(iter_jsonl(r) for r in group), key=_location_key):
                    write(row)
            for r in group:
                r.unlink()
            merged.append(run)
        runs = merged
    return runs


def assemble(parts_dir: Path, inputs: dict[str, int], out: Path) -> dict:
    """Write `out/ledger.jsonl.gz` sorted by location; return counts. Raises if any input is missing
    or counted twice. Streams: the parts are sorted in runs and merged, so memory stays flat however
    large the corpus."""
    per_source: dict[str, Counter] = defaultdict(Counter)
    with tempfile.TemporaryDirectory(dir=out, prefix=".ledger-") as tmp:
        runs = _sorted_runs(parts_dir, Path(tmp))
        merged = heapq.merge(*(iter_jsonl(r) for r in runs), key=_location_key)
        last: tuple | None = None
        with jsonl_writer(Path(out) / LEDGER) as write:  # the ledger appears only if every check passes
            for row in merged:
                key = (row["source"], row["location"])
                if key == last:
                    raise GptnlError(f"ledger check failed: an input recorded twice, e.g. {key}")
                last = key
                per_source[row["source"]][row["outcome"]] += 1
                write(row)
            counts = _counts(per_source, inputs)
            for source, c in counts.items():
                if c["kept"] + c["refused"] != c["inputs"]:
                    raise GptnlError(
                        f"ledger check failed for source {source}: {c['inputs']} documents read, "
                        f"{c['kept']} kept + {c['refused']} refused = {c['kept'] + c['refused']}"
                    )
    return counts


def _counts(per_source: dict[str, Counter], inputs: dict[str, int]) -> dict[str, dict[str, int]]:
    return {s: {"inputs": inputs.get(s, 0), "kept": per_source[s]["kept"], "refused": per_source[s]["refused"]}
            for s in sorted(set(inputs) | set(per_source))}


def source_counts(rows: Iterable[dict], inputs: dict[str, int]) -> dict[str, dict[str, int]]:
    """{source: {inputs, kept, refused}} from ledger rows and the reader's input counts."""
    per_source: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_source[r["source"]][r["outcome"]] += 1
    return _counts(per_source, inputs)


def write_ledger(corpus: Path, rows: list[dict]) -> None:
    write_jsonl(Path(corpus) / LEDGER, sorted(rows, key=_location_key))


def read_ledger(corpus: Path) -> list[dict]:
    return read_jsonl(Path(corpus) / LEDGER)


def reason_category(reason: str) -> str:
    """'non-commercial licence (CC-BY-NC-4.0)' → 'non-commercial licence'; for tables of refusals."""
    return re.sub(r"\s*\(.*$", "", reason).strip() or "unspecified"


def corpus_stats(rows: Iterable[dict], counts: dict, totals: dict[str, int], pii_mode: str) -> CorpusStats:
    """`stats.json`: counts per source, refusals per step and reason, PII per kind, opt-outs; one
    pass over the rows, so the ledger can be streamed."""
    refused: dict[str, dict[str, int]] = {}
    licences: Counter = Counter()
    opt_outs = {"tdm": 0, "blocklist": 0}
    for r in rows:
        if r["outcome"] == "kept":
            licences[r["licence"]] += 1
            continue
        by_step = refused.setdefault(r["step"], {})
        cat = reason_category(r["reason"])
        by_step[cat] = by_step.get(cat, 0) + 1
        if r["step"] == "opt-out":
            opt_outs["tdm"] += "data mining" in r["reason"]
            opt_outs["blocklist"] += "blocklist" in r["reason"]
    return CorpusStats(
        sources=counts, licences=dict(sorted(licences.items())),
        inputs=sum(c["inputs"] for c in counts.values()), kept=sum(c.get("kept", 0) for c in counts.values()),
        refused=sum(c.get("refused", 0) for c in counts.values()), refused_by_step=refused,
        pii={k.removeprefix("pii/"): int(v) for k, v in sorted(totals.items()) if k.startswith("pii/")},
        pii_mode=pii_mode, opt_outs=opt_outs)
