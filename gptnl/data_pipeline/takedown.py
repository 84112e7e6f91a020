"""`gptnl data takedown`: remove documents from a built corpus after an opt-out or a complaint.

Matching documents (by id, url or `domain:host`, the blocklist format) leave `documents/`; their
ledger rows become `refused` by step `takedown`, so the ledger still has one row per input; the
entries join the recipe's blocklist so the next build refuses them too; stats and the card are
rewritten; token shards packed from this corpus are found and named with the command that
rebuilds them (`gptnl data takedown --rebuild` runs it; the data stage does not import the pack
stage). Every training run, export and tuned model whose manifests trace back to those shards
(searched beside the corpus and under `--runs` folders) and that was trained before the takedown is
named in a takedown report (`takedowns/<time>.json` in the corpus), and the model folders' cards
gain a "Known takedowns since training" section, so an operator knows which weights hold withdrawn
text. The build's work folder goes too: it holds intermediate copies of the text, and resuming
from it would bring the documents back. A later build into the same folder starts afresh, and the
blocklist refuses them there.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

from gptnl.artefacts import (
    CorpusManifest,
    ShardsManifest,
    Takedown,
    read_manifest,
    read_stats,
    write_manifest,
    write_stats,
)
from gptnl.config import RecipeConfig, load_sources
from gptnl.corpus import document_files
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.card import write_card
from gptnl.data_pipeline.composition import composition
from gptnl.data_pipeline.descendants import descendants
from gptnl.data_pipeline.gates import blocked, read_blocklist
from gptnl.data_pipeline.stages import WORK
from gptnl.data_pipeline.takedown_report import TakedownReport, mark_model_card, write_report
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_bytes


def _rewrite_documents(corpus: Path, entries: frozenset[str]) -> dict[tuple[str, str], str]:
    removed: dict[tuple[str, str], str] = {}
    for path in document_files(corpus):
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


def rebuild_command(shards: Path, m: ShardsManifest) -> str:
    c = m.config
    return (f"gptnl pack {m.consumed.corpus} --tokenizer {m.consumed.tokenizer.path} "
            f"--seq-len {c.seq_len} --val-fraction {c.val_fraction} --shard-tokens {c.shard_tokens} "
            f"--out {shards}")


def takedown(corpus: Path, entries_file: Path, runs: list[Path] = ()) -> dict:
    """Remove the entries' documents from `corpus`; name the shards to rebuild, and every run, export and
    tuned model under `runs` (and beside the corpus) trained on them before now, in a takedown report."""
    corpus = Path(corpus)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for root in runs:
        if not Path(root).is_dir():
            raise GptnlError(f"--runs {root}: no such folder")
    manifest = read_manifest(corpus, CorpusManifest)
    entries = read_blocklist(entries_file)
    if not entries:
        raise GptnlError(f"{entries_file}: no ids, urls or domain: entries in this file")
    found = descendants(corpus, list(runs))  # before anything changes: made from the corpus as it was
    removed = _rewrite_documents(corpus, entries)
    rows = ledger_mod.read_ledger(corpus)
    for row in rows:
        match = removed.get((row["source"], row["location"]))
        if match and row["outcome"] == "kept":
            row.update(outcome="refused", step="takedown", reason=f"takedown ({match})")
    ledger_mod.write_ledger(corpus, rows)

    old = read_stats(corpus)
    recipe = RecipeConfig.model_validate(manifest.config)
    counts = ledger_mod.source_counts(rows, {s: c.inputs for s, c in old.sources.items()})
    stats = ledger_mod.corpus_stats(rows, counts, {}, recipe.pii.mode).model_copy(update={
        "pii": old.pii, "composition": composition(corpus, recipe.count_tokens_with),
        "takedowns": [*old.takedowns, Takedown(date=now[:10], time=now, entries=sorted(entries),
                                               removed=len(removed))]})
    write_stats(corpus, stats)
    manifest.produced.documents = stats.kept
    write_manifest(corpus, manifest)
    if removed:
        shutil.rmtree(corpus / WORK, ignore_errors=True)

    if recipe.blocklist is not None:
        known = read_blocklist(recipe.blocklist)
        new = sorted(entries - known)
        if new:
            with open(recipe.blocklist, "a", encoding="utf-8") as fh:
                fh.write(f"# takedown {time.strftime('%Y-%m-%d', time.gmtime())}\n" + "".join(e + "\n" for e in new))
    write_card(corpus, recipe, load_sources(recipe.sources), stats)

    # rebuilding the shards is the pack stage's job (`--rebuild` in the CLI)
    shards = [(Path(d.path), read_manifest(Path(d.path), ShardsManifest)) for d in found if d.stage == "pack"]
    report = TakedownReport(
        corpus=str(corpus.resolve()), time=now, entries=sorted(entries), removed=len(removed),
        searched=[str(Path(r).resolve()) for r in [corpus.resolve().parent, *runs]],
        shards=[d for d in found if d.stage == "pack"],
        rebuild=[rebuild_command(p, m) for p, m in shards] if removed else [],
        trained=[d for d in found if d.stage != "pack" and (not d.finished or (d.created or "") <= now)])
    path = write_report(corpus, report)
    if removed:
        for d in report.trained:
            if d.stage in ("export", "finetune"):
                mark_model_card(Path(d.path), report, path)
    return {"removed": len(removed), "shards": [str(p) for p, _ in shards], "rebuild": report.rebuild,
            "report": str(path), "trained": [d.model_dump() for d in report.trained]}
