"""`gptnl data build`: a recipe run through datatrove, then the ledger check, stats, card and manifest.

The corpus dir holds `documents/` (kept documents, JSONL.gz, the format `gptnl pack` reads),
`ledger.jsonl.gz`, `stats.json`, `CARD.md` and `manifest.json`; the work files of the run
(datatrove's logs and completion markers, ledger parts) are under `.pipeline/`, which is what
makes a rerun after a crash skip finished tasks and redo the others.
"""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers.jsonl import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter

from gptnl.config import RecipeConfig, load_cluster, load_licence_policy, load_sources
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.boilerplate import DutchBoilerplateFilter
from gptnl.data_pipeline.card import write_card
from gptnl.data_pipeline.decontaminate import Decontaminator
from gptnl.data_pipeline.dedup import ExactDedupFilter
from gptnl.data_pipeline.extract import HtmlExtractor
from gptnl.data_pipeline.gates import LicenceFilter, MalformedGate, OptOutFilter, read_blocklist
from gptnl.data_pipeline.langid import DutchLanguageFilter
from gptnl.data_pipeline.normalise import Normaliser
from gptnl.data_pipeline.quality import RegexWordTokenizer, quality_filters
from gptnl.data_pipeline.reader import SourceReader, source_files
from gptnl.data_pipeline.scrub import PiiScrubber
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_json, sha256_file, write_manifest

WORK = ".pipeline"


class DocumentRow:
    """Kept documents in the corpus document format (docs/data.md)."""

    def __call__(self, writer, doc) -> dict:
        m = doc.metadata
        return {
            "id": doc.id, "text": doc.text, "source": m["source"], "licence": m["licence"], "url": m.get("url"),
            "author": m.get("author"), "created": m.get("created"), "retrieved": m.get("retrieved"),
            "tdm_reservation": False, "lang": m.get("lang"), "lang_score": m.get("lang_score"),
            "metadata": {"location": m["location"], "pii": m.get("pii", {}), "attribution": m.get("attribution"),
                         "share_alike": m.get("share_alike")},
        }


def filter_stage(recipe: RecipeConfig, out: Path) -> list:
    """Stage 1: read, gate, clean and filter; survivors go to `.pipeline/filtered/`."""
    sources = load_sources(recipe.sources)
    steps = [
        SourceReader(sources.sources, recipe.sources.parent),
        MalformedGate(exclusion_writer=ledger_writer(out, "malformed")),
        LicenceFilter(load_licence_policy(recipe.licences), exclusion_writer=ledger_writer(out, "licence")),
        OptOutFilter(read_blocklist(recipe.blocklist), exclusion_writer=ledger_writer(out, "opt-out")),
        HtmlExtractor(exclusion_writer=ledger_writer(out, "html")),
        Normaliser(),
        DutchLanguageFilter(recipe.language.keep, recipe.language.min_score,
                            exclusion_writer=ledger_writer(out, "language")),
        DutchBoilerplateFilter(exclusion_writer=ledger_writer(out, "boilerplate")),
        *quality_filters(recipe.quality, lambda step: ledger_writer(out, step)),
        PiiScrubber(recipe.pii.mode, recipe.pii.seed),
    ]
    if recipe.exact_dedup:
        steps.append(ExactDedupFilter(exclusion_writer=ledger_writer(out, "dedup")))
    if recipe.decontamination.tasks is not None:
        steps.append(Decontaminator(recipe.decontamination.tasks, recipe.decontamination.n_grams,
                                    exclusion_writer=ledger_writer(out, "decontamination")))
    return steps + [JsonlWriter(str(out / WORK / "filtered"), output_filename="${rank}.jsonl.gz",
                                adapter=DocumentRow())]


def ledger_writer(out: Path, step: str, default_reason: str = "", outcome: str = "refused") -> JsonlWriter:
    name = "kept" if outcome == "kept" else step
    return JsonlWriter(str(out / WORK / "ledger"), output_filename=f"{name}-${{rank}}.jsonl", compression=None,
                       adapter=ledger_mod.LedgerRow(step, outcome=outcome, default_reason=default_reason))


def final_writers(out: Path) -> list:
    return [JsonlWriter(str(out / "documents"), output_filename="${rank}.jsonl.gz", adapter=DocumentRow()),
            ledger_writer(out, "", outcome="kept")]


EXECUTORS = ("local", "ray", "slurm")


class FilteredReader(JsonlReader):
    """The filter stage's survivors. No survivors is a valid (empty) corpus, not datatrove's
    'No files found' error: on Slurm the later stages are submitted before anyone knows."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if not self.data_folder.list_files(glob_pattern=self.glob_pattern):
            return
        yield from super().run(data, rank, world_size)


def stages(recipe: RecipeConfig, out: Path) -> list[tuple[list, int, str]]:
    """(steps, tasks, name) in order: the filter stage, then a plain copy or MinHash's four stages.
    Each stage has its own logging dir, so each is resumable on its own."""
    filtered = str(out / WORK / "filtered")

    def reader() -> JsonlReader:
        return FilteredReader(filtered, glob_pattern="*.jsonl.gz")

    first = (filter_stage(recipe, out), recipe.tasks, "filter")
    nd = recipe.near_dedup
    if not nd.enabled:
        return [first, ([reader(), *final_writers(out)], recipe.tasks, "write")]
    config = MinhashConfig(n_grams=nd.n_grams, num_buckets=nd.num_buckets, hashes_per_bucket=nd.hashes_per_bucket,
                           seed=nd.seed)
    mh = out / WORK / "minhash"
    return [
        first,
        ([reader(), MinhashDedupSignature(str(mh / "signatures"), config=config, language=RegexWordTokenizer())],
         recipe.tasks, "signatures"),
        ([MinhashDedupBuckets(str(mh / "signatures"), str(mh / "buckets"), config=config)], nd.num_buckets, "buckets"),
        ([MinhashDedupCluster(str(mh / "buckets"), str(mh / "remove"), config=config)], 1, "clusters"),
        ([reader(), MinhashDedupFilter(str(mh / "remove"), exclusion_writer=ledger_writer(
            out, "near-dedup", default_reason=f"near-duplicate (MinHash, {nd.n_grams}-gram shingles)")),
          *final_writers(out)], recipe.tasks, "near-dedup"),
    ]


def make_executor(kind: str, steps: list, tasks: int, workers: int, logging_dir: Path):
    """The same steps on datatrove's local executor, or on Ray (`ray.init` must have run)."""
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(steps, tasks=tasks, workers=min(workers, tasks), logging_dir=str(logging_dir),
                                   cpus_per_task=1, mem_per_cpu_gb=0.5)
    return LocalPipelineExecutor(steps, tasks=tasks, workers=min(workers, tasks), logging_dir=str(logging_dir))


def run_stages(recipe: RecipeConfig, out: Path, workers: int, executor: str = "local") -> None:
    logs = out / WORK / "logs"
    for i, (steps, n, name) in enumerate(stages(recipe, out)):
        make_executor(executor, steps, n, workers, logs / name).run()
        if i == 0 and not list((out / WORK / "filtered").glob("*.jsonl.gz")):
            (out / "documents").mkdir(parents=True, exist_ok=True)  # nothing survived the filters
            return


def _same_recipe_or_refuse(out: Path, recipe: RecipeConfig) -> None:
    """A rerun resumes only the run it belongs to: finished tasks are skipped, so a changed recipe
    would silently mix old and new outputs."""
    record = out / WORK / "recipe.json"
    current = json.loads(recipe.model_dump_json())
    if record.is_file():
        if json.loads(record.read_text()) != current:
            raise GptnlError(f"{out} holds a build of another recipe (or settings); use a new --out, "
                             f"or delete {out} to rebuild")
        return
    atomic_write_json(record, current)


def stat_totals(logging_dir: Path) -> dict[str, int]:
    """Sum datatrove's per-task stats into {stat name: total}."""
    totals: dict[str, int] = {}
    for path in sorted((logging_dir / "stats").glob("*.json")):
        for step in json.loads(path.read_text()):
            for name, value in step.get("stats", {}).items():
                total = value.get("total", value) if isinstance(value, dict) else value
                if isinstance(total, int | float):
                    totals[name] = totals.get(name, 0) + total
    return totals


def build(recipe_path: Path, recipe: RecipeConfig, out: Path, *, workers: int | None = None,
          executor: str = "local", ray_address: str | None = None, cluster: Path | None = None,
          dry_run: bool = False) -> dict:
    """Run the recipe into `out`; returns stats. `executor="ray"` connects to `ray_address`
    (or starts a local Ray) and stops what it started. `executor="slurm"` submits array jobs and a
    final job that finishes the corpus, and returns their job ids at once (with `dry_run`, their
    scripts, and nothing is written)."""
    if executor not in EXECUTORS:
        raise GptnlError(f"--executor {executor!r}: allowed values are {', '.join(EXECUTORS)}")
    if executor == "slurm" and cluster is None:
        raise GptnlError("--executor slurm needs --cluster (a profile under slurm/clusters/)")
    out = Path(out).resolve()
    sources = load_sources(recipe.sources)
    files = source_files(sources.sources, recipe.sources.parent)
    if not files:
        raise GptnlError(f"{recipe.sources}: no file matches any source's path and format")
    if executor == "slurm" and dry_run:
        from gptnl.data_pipeline.slurm import scripts

        return {"scripts": scripts(recipe_path, recipe, out, load_cluster(cluster), workers)}
    _same_recipe_or_refuse(out, recipe)
    if executor == "slurm":
        from gptnl.data_pipeline.slurm import submit

        return submit(recipe_path, recipe, out, load_cluster(cluster), workers)
    workers = workers or 1
    if executor == "ray":
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=ray_address, num_cpus=None if ray_address else max(1, workers),
                     include_dashboard=False, log_to_driver=False)
        try:
            run_stages(recipe, out, workers, executor)
        finally:
            if started:
                ray.shutdown()
    else:
        run_stages(recipe, out, workers, executor)
    return finalise(recipe_path, recipe, out, sources, files)


def finalise(recipe_path: Path, recipe: RecipeConfig, out: Path, sources, files) -> dict:
    """Ledger check, stats, card and manifest, from the finished stages' outputs."""
    totals = stat_totals(out / WORK / "logs" / "filter")
    inputs = {s.name: int(totals.get(f"input/{s.name}", 0)) for s in sources.sources}
    counts = ledger_mod.assemble(out / WORK / "ledger", inputs, out)
    stats = ledger_mod.corpus_stats(ledger_mod.read_ledger(out), counts, totals, recipe.pii.mode)
    atomic_write_json(out / "stats.json", stats)
    write_card(out, recipe, sources, stats)
    write_manifest(
        out, stage="data",
        consumed={"recipe": str(Path(recipe_path).resolve()),
                  "files": [{"path": str(p), "sha256": sha256_file(p)} for _, p in files]},
        produced={"documents": stats["kept"], "ledger": ledger_mod.LEDGER,
                  "shards": sorted(p.name for p in (out / "documents").glob("*.jsonl.gz"))},
        config=json.loads(recipe.model_dump_json()),
    )
    return stats
