"""The ledger: one row per input document — kept, or refused by which step and why.

Rows are written while the pipeline runs, by each filter's exclusion writer (refused) and by a
writer after the last step (kept), one file per step and task. `assemble` merges them, proves
that every input line of every source ended in exactly one row, and fails loudly if not.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from datatrove.data import Document

from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_bytes

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
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def assemble(parts_dir: Path, inputs: dict[str, int], out: Path) -> dict:
    """Write `out/ledger.jsonl.gz`; return counts. Raises if any input is missing or counted twice."""
    rows = read_parts(parts_dir)
    seen = Counter((r["source"], r["location"]) for r in rows)
    twice = [k for k, n in seen.items() if n > 1]
    if twice:
        raise GptnlError(f"ledger check failed: {len(twice)} input(s) recorded twice, e.g. {twice[0]}")
    counts = source_counts(rows, inputs)
    for source, c in counts.items():
        if c["kept"] + c["refused"] != c["inputs"]:
            raise GptnlError(
                f"ledger check failed for source {source}: {c['inputs']} documents read, "
                f"{c['kept']} kept + {c['refused']} refused = {c['kept'] + c['refused']}"
            )
    write_ledger(out, rows)
    return counts


def source_counts(rows: list[dict], inputs: dict[str, int]) -> dict[str, dict[str, int]]:
    """{source: {inputs, kept, refused}} from ledger rows and the reader's input counts."""
    per_source: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_source[r["source"]][r["outcome"]] += 1
    return {s: {"inputs": inputs.get(s, 0), "kept": per_source[s]["kept"], "refused": per_source[s]["refused"]}
            for s in sorted(set(inputs) | set(per_source))}


def write_ledger(corpus: Path, rows: list[dict]) -> None:
    rows = sorted(rows, key=_location_key)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    atomic_write_bytes(Path(corpus) / LEDGER, gzip.compress(payload, mtime=0))


def read_ledger(corpus: Path) -> list[dict]:
    with gzip.open(Path(corpus) / LEDGER, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def reason_category(reason: str) -> str:
    """'non-commercial licence (CC-BY-NC-4.0)' → 'non-commercial licence'; for tables of refusals."""
    return re.sub(r"\s*\(.*$", "", reason).strip() or "unspecified"


def corpus_stats(rows: list[dict], counts: dict, totals: dict[str, int], pii_mode: str) -> dict:
    """`stats.json`: counts per source, refusals per step and reason, PII per kind, opt-outs."""
    refused: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["outcome"] == "refused":
            by_step = refused.setdefault(r["step"], {})
            cat = reason_category(r["reason"])
            by_step[cat] = by_step.get(cat, 0) + 1
    licences = Counter(r["licence"] for r in rows if r["outcome"] == "kept")
    return {
        "sources": counts,
        "licences": dict(sorted(licences.items())),
        "inputs": sum(c["inputs"] for c in counts.values()),
        "kept": sum(c.get("kept", 0) for c in counts.values()),
        "refused": sum(c.get("refused", 0) for c in counts.values()),
        "refused_by_step": refused,
        "pii": {k.removeprefix("pii/"): int(v) for k, v in sorted(totals.items()) if k.startswith("pii/")},
        "pii_mode": pii_mode,
        "opt_outs": {
            "tdm": sum(1 for r in rows if r["step"] == "opt-out" and "data mining" in r["reason"]),
            "blocklist": sum(1 for r in rows if r["step"] == "opt-out" and "blocklist" in r["reason"]),
        },
    }
