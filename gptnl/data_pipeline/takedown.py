"""`gptnl data takedown`: remove documents from a built corpus after an opt-out or a complaint.

Matching documents (by id, url or `domain:host`, the blocklist format) leave `documents/`; their
ledger rows become `refused` by step `takedown`, so the ledger still has one row per input; the
entries join the recipe's blocklist so the next build refuses them too; stats and the card are
rewritten; token shards packed from this corpus are found and named with the command that
rebuilds them (`gptnl data takedown --rebuild` runs it; the data stage does not import the pack
stage). The build's work folder goes too: it holds intermediate copies of the text, and resuming
from it would bring the documents back. A later build into the same folder starts afresh, and the
blocklist refuses them there.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

from gptnl.config import RecipeConfig, load_sources
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.card import write_card
from gptnl.data_pipeline.gates import blocked, read_blocklist
from gptnl.data_pipeline.stages import WORK
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_bytes, atomic_write_json, read_manifest


def _rewrite_documents(corpus: Path, entries: frozenset[str]) -> dict[tuple[str, str], str]:
    removed: dict[tuple[str, str], str] = {}
    for path in sorted((corpus / "documents").glob("*.jsonl.gz")):
        kept_lines, dropped = [], 0
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                match = blocked(doc["id"], doc.get("url"), entries)
                if match:
                    removed[(doc["source"], doc["metadata"]["location"])] = match
                    dropped += 1
                else:
                    kept_lines.append(line)
        if dropped:
            atomic_write_bytes(path, gzip.compress("".join(kept_lines).encode("utf-8"), mtime=0))
    return removed


def derived_shards(corpus: Path) -> list[tuple[Path, dict]]:
    """Shards dirs beside the corpus whose pack manifest says they were packed from it."""
    found = []
    for manifest in sorted(corpus.resolve().parent.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        if m.get("stage") == "pack" and Path(m["consumed"]["corpus"]).resolve() == corpus.resolve():
            found.append((manifest.parent, m))
    return found


def rebuild_command(shards: Path, m: dict) -> str:
    c = m["config"]
    return (f"gptnl pack {m['consumed']['corpus']} --tokenizer {m['consumed']['tokenizer']['path']} "
            f"--seq-len {c['seq_len']} --val-fraction {c['val_fraction']} --shard-tokens {c['shard_tokens']} "
            f"--out {shards}")


def takedown(corpus: Path, entries_file: Path) -> dict:
    corpus = Path(corpus)
    manifest = read_manifest(corpus)
    if manifest.get("stage") != "data":
        raise GptnlError(f"{corpus}: not a corpus built by `gptnl data build`")
    entries = read_blocklist(entries_file)
    if not entries:
        raise GptnlError(f"{entries_file}: no ids, urls or domain: entries in this file")
    removed = _rewrite_documents(corpus, entries)
    rows = ledger_mod.read_ledger(corpus)
    for row in rows:
        match = removed.get((row["source"], row["location"]))
        if match and row["outcome"] == "kept":
            row.update(outcome="refused", step="takedown", reason=f"takedown ({match})")
    ledger_mod.write_ledger(corpus, rows)

    old = json.loads((corpus / "stats.json").read_text())
    recipe = RecipeConfig.model_validate(manifest["config"])
    counts = ledger_mod.source_counts(rows, {s: c["inputs"] for s, c in old["sources"].items()})
    stats = {**ledger_mod.corpus_stats(rows, counts, {}, recipe.pii.mode), "pii": old["pii"],
             "takedowns": [*old.get("takedowns", []), {"date": time.strftime("%Y-%m-%d", time.gmtime()),
                                                      "entries": sorted(entries), "removed": len(removed)}]}
    atomic_write_json(corpus / "stats.json", stats)
    atomic_write_json(corpus / "manifest.json", {**manifest, "produced": {**manifest["produced"],
                                                                          "documents": stats["kept"]}})
    if removed:
        shutil.rmtree(corpus / WORK, ignore_errors=True)

    if recipe.blocklist is not None:
        known = read_blocklist(recipe.blocklist)
        new = sorted(entries - known)
        if new:
            with open(recipe.blocklist, "a", encoding="utf-8") as fh:
                fh.write(f"# takedown {time.strftime('%Y-%m-%d', time.gmtime())}\n" + "".join(e + "\n" for e in new))
    write_card(corpus, recipe, load_sources(recipe.sources), stats)

    shards = derived_shards(corpus)  # rebuilding them is the pack stage's job (`--rebuild` in the CLI)
    return {"removed": len(removed), "shards": [str(p) for p, _ in shards],
            "rebuild": [rebuild_command(p, m) for p, m in shards] if removed else []}
