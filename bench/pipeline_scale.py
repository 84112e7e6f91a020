"""Corpus pipeline at scale: gptnl's whole default recipe on 10k, 100k and 1M generated documents.

The documents come from the generator of `bench/pipeline_throughput.py` (Dutch recombined from the
sample, other languages, boilerplate, exact and near duplicates), split over many `.jsonl.gz`
files and read by `tasks` > 1. Every stage of the build runs in a process of its own, so its peak
RSS is that stage's alone: the filter stage, MinHash's signatures, buckets and clusters, the
near-dedup filter and writers, the ledger assembly with its check, and the rest of finalising
(stats, card, manifest, which assemble the ledger again). The stage process reports its own
high-water mark (`VmHWM`, of the memory it has had since its exec) and the largest of its workers
(`RUSAGE_CHILDREN`); `wait4`'s figure would not do, since Linux carries the parent's peak across
fork and exec into the child's `ru_maxrss`.

Goal: peak memory that does not grow with the corpus (no per-document state held in memory) and
time linear in it (the largest size within 10 % of its share of the smaller's time).

    python bench/pipeline_scale.py [--sizes 10000 100000 1000000] [--workers 2] \
        [--out bench/results/pipeline_scale.json]
    python bench/pipeline_scale.py --quick      # two small sizes, for tests
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_throughput import generate  # noqa: E402  (the generator both benchmarks share)

LEDGER, FINALISE = "ledger assembly + check", "finalise (stats, card, manifest)"


def write_corpus(n: int, data: Path, docs_per_file: int) -> int:
    """N generated documents in files of `docs_per_file` lines; returns the number of files."""
    scratch = data.parent / "generated"
    generate(n, scratch)
    data.mkdir(parents=True, exist_ok=True)
    files = 0
    with gzip.open(scratch / "docs.jsonl.gz", "rt", encoding="utf-8") as src:
        while lines := list(islice(src, docs_per_file)):
            with gzip.open(data / f"part-{files:05d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as fh:
                fh.writelines(lines)
            files += 1
    shutil.rmtree(scratch)
    return files


def write_recipe(work: Path, data: Path, tasks: int) -> Path:
    """The default recipe, reading the generated files with `tasks` tasks."""
    import yaml

    shutil.copy(ROOT / "data_pipeline" / "licences.yaml", work / "licences.yaml")
    (work / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "bench", "path": str(data / "*.jsonl.gz"), "publisher": "bench", "url": "bench",
        "retrieved": "2026-01-01"}]}))
    recipe = yaml.safe_load((ROOT / "data_pipeline" / "recipes" / "default.yaml").read_text())
    recipe.update(sources=str(work / "sources.yaml"), licences=str(work / "licences.yaml"), blocklist=None,
                  tasks=tasks)
    recipe["decontamination"]["tasks"] = str(ROOT / "evals" / "tasks")
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return work / "recipe.yaml"


def peak_rss_kib() -> dict:
    """This process's high-water RSS since its exec, and the largest of its waited-for workers (KiB)."""
    import resource

    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    return {"self": hwm, "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def child(recipe_path: Path, out: Path, stage: str, workers: int) -> None:
    """One stage, in this process (and the executor's workers); its peak RSS as the last stdout line."""
    try:
        run_child(recipe_path, out, stage, workers)
    finally:
        print(json.dumps(peak_rss_kib()), flush=True)


def run_child(recipe_path: Path, out: Path, stage: str, workers: int) -> None:
    from gptnl.config import load_recipe, load_sources
    from gptnl.data_pipeline import build as build_mod
    from gptnl.data_pipeline import ledger as ledger_mod
    from gptnl.data_pipeline.reader import source_files
    from gptnl.data_pipeline.stages import WORK, stages

    recipe = load_recipe(recipe_path)
    if stage in (LEDGER, FINALISE):
        sources = load_sources(recipe.sources)
        if stage == LEDGER:  # the merge and the one-row-per-input proof, into a scratch folder
            totals = build_mod.stat_totals(out / WORK / "logs" / "filter")
            inputs = {s.name: int(totals.get(f"input/{s.name}", 0)) for s in sources.sources}
            scratch = out.parent / "ledger-only"
            scratch.mkdir(exist_ok=True)
            ledger_mod.assemble(out / WORK / "ledger", inputs, scratch)
        else:
            build_mod.finalise(recipe_path, recipe, out, sources, source_files(sources.sources, recipe.sources.parent))
        return
    steps, tasks, _ = next(s for s in stages(recipe, out) if s[2] == stage)
    build_mod.make_executor("local", steps, tasks, workers, out / WORK / "logs" / stage).run()


def run_stage(recipe: Path, out: Path, stage: str, workers: int) -> dict:
    """A stage in a fresh process: its seconds and the peak RSS of it and its workers (MiB)."""
    cmd = [sys.executable, __file__, "--child", stage, "--recipe", str(recipe), "--corpus", str(out),
           "--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"stage {stage!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"stage": stage, "seconds": seconds, "peak_rss_mib": max(peak.values()) / 1024,
            "process_rss_mib": peak["self"] / 1024, "workers_rss_mib": peak["workers"] / 1024}


def measure(n: int, workers: int, docs_per_file: int, tmp: Path) -> dict:
    from gptnl.config import load_recipe
    from gptnl.data_pipeline.stages import stages

    work = tmp / f"n{n}"
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    files = write_corpus(n, work / "data", docs_per_file)
    generated_s = time.perf_counter() - t0
    tasks = max(2, files)
    recipe = write_recipe(work, work / "data", tasks)
    out = work / "corpus"
    names = [name for _, _, name in stages(load_recipe(recipe), out)]
    rows = [run_stage(recipe, out, name, workers) for name in names + [LEDGER, FINALISE]]
    stats = json.loads((out / "stats.json").read_text())
    build_s = sum(r["seconds"] for r in rows if r["stage"] != LEDGER)  # finalise assembles the ledger itself
    peak = max(rows, key=lambda r: r["peak_rss_mib"])
    size = {"docs": n, "files": files, "tasks": tasks, "workers": workers, "generate_seconds": generated_s,
            "seconds": build_s, "docs_per_s": n / build_s, "kept": stats["kept"], "refused": stats["refused"],
            "peak_rss_mib": peak["peak_rss_mib"], "peak_stage": peak["stage"], "stages": rows}
    print(f"{n:>9,} docs  {files:>4} files  {build_s:>8.1f} s  {n / build_s:>7,.0f} docs/s  "
          f"peak {peak['peak_rss_mib']:,.0f} MiB ({peak['stage']})", flush=True)
    for r in rows:
        print(f"    {r['stage']:<36}{r['seconds']:>8.1f} s {r['peak_rss_mib']:>8,.0f} MiB", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return size


def growth(sizes: list[dict]) -> dict:
    """Largest size against the smallest: time against the linear share, peak RSS per stage."""
    small, large = sizes[0], sizes[-1]
    factor = large["docs"] / small["docs"]
    per_stage = {r["stage"]: r["peak_rss_mib"] / max(1e-9, s["peak_rss_mib"])
                 for r, s in zip(large["stages"], small["stages"], strict=True)}
    return {"docs_factor": factor, "time_factor": large["seconds"] / small["seconds"],
            "time_vs_linear": large["seconds"] / small["seconds"] / factor,
            "peak_rss_factor": large["peak_rss_mib"] / small["peak_rss_mib"], "peak_rss_factor_by_stage": per_stage}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--quick", action="store_true", help="sizes 400 and 1600, for tests")
    ap.add_argument("--docs-per-file", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(ROOT / "bench/results/pipeline_scale.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.recipe, args.corpus, args.child, args.workers)
    sizes, per_file = ([400, 1600], 200) if args.quick else (sorted(args.sizes), args.docs_per_file)
    with tempfile.TemporaryDirectory() as tmp:
        measured = [measure(n, args.workers, per_file, Path(tmp)) for n in sizes]
    result = {"benchmark": "pipeline_scale", "machine": platform.processor() or "cpu", "cpus": os.cpu_count(),
              "peer": "the same recipe on the smallest corpus (linear time, flat peak RSS)",
              "sizes": measured, "growth": growth(measured),
              "goal": "time within 10 % of linear; peak RSS independent of corpus size"}
    g = result["growth"]
    print(f"{sizes[-1]:,} vs {sizes[0]:,} docs: time {g['time_factor']:.2f}x ({g['time_vs_linear']:.2f} of linear), "
          f"peak RSS {g['peak_rss_factor']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
