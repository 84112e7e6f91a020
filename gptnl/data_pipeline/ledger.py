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
    per_source: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_source[r["source"]][r["outcome"]] += 1
    for source in sorted(set(inputs) | set(per_source)):
        got = per_source[source]["kept"] + per_source[source]["refused"]
        if got != inputs.get(source, 0):
            raise GptnlError(
                f"ledger check failed for source {source}: {inputs.get(source, 0)} documents read, "
                f"{per_source[source]['kept']} kept + {per_source[source]['refused']} refused = {got}"
            )
    rows.sort(key=_location_key)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    atomic_write_bytes(Path(out) / LEDGER, gzip.compress(payload, mtime=0))
    return {s: {"inputs": inputs.get(s, 0), **dict(c)} for s, c in sorted(per_source.items())}


def read_ledger(corpus: Path) -> list[dict]:
    with gzip.open(Path(corpus) / LEDGER, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def reason_category(reason: str) -> str:
    """'non-commercial licence (CC-BY-NC-4.0)' → 'non-commercial licence'; for tables of refusals."""
    return re.sub(r"\s*\(.*$", "", reason).strip() or "unspecified"
