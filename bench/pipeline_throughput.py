"""Corpus-pipeline throughput: gptnl's recipe vs a stock datatrove chain, same input, same run.

Input: N mixed documents generated from the bundled sample (Dutch variations, English, German and
Afrikaans documents, boilerplate, exact and near duplicates). Three runs, one process each:

1. stock datatrove: GopherQuality + GopherRepetition + C4 with datatrove's default Dutch word
   tokeniser (spaCy `nl`), then MinHash's four stages — the chain a datatrove user writes;
2. the same blocks with gptnl's regex word tokeniser (what our recipe uses) — the kept sets of
   1 and 2 are compared, since their filters are the same;
3. gptnl's whole default recipe (licences, opt-outs, normalisation, language ID, boilerplate,
   quality, PII, exact and MinHash dedup, decontamination, ledger, card).

Goal: run 2 (and 3) ≥ 5× the docs/s of run 1, with ≥ 99 % agreement of kept sets (1 vs 2).
Needs spaCy for run 1: `pip install spacy`.

    python bench/pipeline_throughput.py [--docs 20000] [--out bench/results/pipeline_throughput.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data_pipeline" / "sample"


def generate(n: int, out: Path, seed: int = 0) -> None:
    """N documents: 70% Dutch (sample paragraphs recombined), 10% other languages, 5% boilerplate,
    15% exact or near duplicates of earlier ones."""
    rng = random.Random(seed)
    good = [json.loads(line) for p in sorted(SAMPLE.glob("*.jsonl")) for line in p.read_text().splitlines()]
    paragraphs = [p for d in good for p in d["text"].split("\n\n") if len(p.split()) >= 8]
    bad = [json.loads(line) for line in (SAMPLE / "bad" / "bad.jsonl").read_text().splitlines()]
    foreign = [d for d in bad if d["expected"].startswith("lang-")]
    boiler = [d for d in bad if d["expected"] == "boilerplate"]
    docs = []
    for i in range(n):
        r = rng.random()
        if r < 0.70 or not docs:
            # four paragraphs from anywhere in the sample: distinct documents that still read as Dutch
            text = "\n\n".join(rng.sample(paragraphs, 4)) + f"\n\nKenmerk {i}: {rng.randint(1000, 9999)}."
        elif r < 0.80:
            text = rng.choice(foreign)["text"] + f"\n\nRef {i}."
        elif r < 0.85:
            text = rng.choice(boiler)["text"]
        elif r < 0.925:
            text = rng.choice(docs)["text"]  # exact duplicate
        else:
            words = rng.choice(docs)["text"].split(" ")
            for _ in range(max(1, len(words) // 40)):
                words[rng.randrange(len(words))] = rng.choice(["ook", "nu", "dan", "wel"])
            text = " ".join(words)  # near duplicate
        docs.append({"id": f"b{i}", "text": text, "licence": "CC0-1.0"})
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "docs.jsonl.gz", "wt", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")


def same_blocks_chain(work: Path, data: Path, tokenizer) -> tuple[float, set[str]]:
    """Gopher + repetition + C4 + MinHash with a given word tokeniser; (seconds, kept ids)."""
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.filters.c4_filters import C4QualityFilter
    from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
    from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter
    from datatrove.pipeline.readers.jsonl import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    from gptnl.data_pipeline.quality import DUTCH_STOP_WORDS

    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    t0 = time.perf_counter()
    stages = [
        ([JsonlReader(str(data)), GopherQualityFilter(language=tokenizer, stop_words=list(DUTCH_STOP_WORDS),
                                                      max_non_alpha_words_ratio=0.7),
          GopherRepetitionFilter(language=tokenizer),
          C4QualityFilter(filter_no_terminal_punct=False, min_words_per_line=-1, language=tokenizer),
          JsonlWriter(str(work / "filtered"))], 1),
        ([JsonlReader(str(work / "filtered")), MinhashDedupSignature(str(work / "sigs"), config=cfg,
                                                                     language=tokenizer)], 1),
        ([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)], 14),
        ([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)], 1),
        ([JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
          JsonlWriter(str(work / "out"))], 1),
    ]
    for i, (steps, tasks) in enumerate(stages):
        LocalPipelineExecutor(steps, tasks=tasks, workers=1, logging_dir=str(work / f"logs{i}")).run()
    seconds = time.perf_counter() - t0
    kept = set()
    for path in (work / "out").glob("*.jsonl.gz"):
        with gzip.open(path, "rt") as fh:
            kept |= {json.loads(line)["id"] for line in fh}
    return seconds, kept


def full_recipe(work: Path, data: Path) -> tuple[float, int]:
    import yaml

    from gptnl.config import load_recipe
    from gptnl.data_pipeline.build import build

    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "data_pipeline" / "licences.yaml", work / "licences.yaml")
    (work / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "bench", "path": str(data / "*.jsonl.gz"), "publisher": "bench", "url": "bench",
        "retrieved": "2026-01-01"}]}))
    recipe = ROOT / "data_pipeline" / "recipes" / "default.yaml"
    text = recipe.read_text().replace("../sources.yaml", str(work / "sources.yaml"))
    text = text.replace("../licences.yaml", str(work / "licences.yaml")).replace("../blocklist.txt", "null")
    (work / "recipe.yaml").write_text(text.replace("tasks: ../../evals/tasks", f"tasks: {ROOT / 'evals/tasks'}"))
    t0 = time.perf_counter()
    stats = build(work / "recipe.yaml", load_recipe(work / "recipe.yaml"), work / "corpus")
    return time.perf_counter() - t0, stats.kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--out", default=str(ROOT / "bench/results/pipeline_throughput.json"))
    args = ap.parse_args()

    from gptnl.data_pipeline.quality import RegexWordTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(args.docs, tmp / "data")
        stock_s, stock_kept = same_blocks_chain(tmp / "stock", tmp / "data", "nld")
        ours_s, ours_kept = same_blocks_chain(tmp / "ours", tmp / "data", RegexWordTokenizer())
        recipe_s, recipe_kept = full_recipe(tmp / "recipe", tmp / "data")
    union = stock_kept | ours_kept
    agreement = 1 - len(stock_kept ^ ours_kept) / max(1, len(union))
    result = {
        "benchmark": "pipeline_throughput", "docs": args.docs, "machine": platform.processor() or "cpu",
        "peer": "datatrove stock chain: GopherQuality + GopherRepetition + C4 (spaCy nl tokeniser) + MinHash",
        "peer_docs_per_s": args.docs / stock_s,
        "same_blocks_regex_docs_per_s": args.docs / ours_s,
        "full_recipe_docs_per_s": args.docs / recipe_s,
        "ratio_same_blocks": stock_s / ours_s, "ratio_full_recipe": stock_s / recipe_s,
        "kept_peer": len(stock_kept), "kept_same_blocks": len(ours_kept), "kept_full_recipe": recipe_kept,
        "kept_agreement": agreement, "goal": ">= 5x with >= 99% agreement",
    }
    print(f"{'run':<40}{'docs/s':>10}{'kept':>8}")
    print(f"{'stock datatrove (spaCy tokeniser)':<40}{result['peer_docs_per_s']:>10,.0f}{len(stock_kept):>8}")
    print(f"{'same blocks, gptnl regex tokeniser':<40}{result['same_blocks_regex_docs_per_s']:>10,.0f}"
          f"{len(ours_kept):>8}")
    print(f"{'gptnl full default recipe':<40}{result['full_recipe_docs_per_s']:>10,.0f}{recipe_kept:>8}")
    print(f"ratio same blocks {result['ratio_same_blocks']:.1f}x, full recipe {result['ratio_full_recipe']:.1f}x; "
          f"kept-set agreement {agreement:.2%} (goal >= 5x, >= 99%)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
