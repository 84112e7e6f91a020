"""`gptnl data build`: a recipe run through datatrove, then the ledger check, stats, card and manifest.

The corpus dir holds `documents/` (kept documents, JSONL.gz, the format `gptnl pack` reads),
`ledger.jsonl.gz`, `stats.json`, `CARD.md` and `manifest.json`; the work files of the run
(datatrove's logs and completion markers, ledger parts) are under `.pipeline/`, which is what
makes a rerun after a crash skip finished tasks and redo the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor

from gptnl.artefacts import (
    BuildPlan,
    BuildSubmitted,
    CorpusInputs,
    CorpusManifest,
    CorpusOutputs,
    CorpusStats,
    FileDigest,
    SkippedPath,
    write_manifest,
    write_stats,
)
from gptnl.config import RecipeConfig, load_cluster, load_sources
from gptnl.corpus import document_files
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.card import write_card
from gptnl.data_pipeline.composition import composition
from gptnl.data_pipeline.inputs import Skipped, discover
from gptnl.data_pipeline.stages import WORK, stages
from gptnl.errors import GptnlError
from gptnl.fileio import iter_jsonl, sha256_file
from gptnl.run_record import differs_in, same_run_or_refuse

EXECUTORS = ("local", "ray", "slurm")
SHOWN_SKIPPED = 20


def note_skipped(skipped: list[Skipped]) -> None:
    """Say on the console which matched paths are not read, and why; the manifest lists them all."""
    if not skipped:
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    console.print(f"[yellow]{len(skipped)} path(s) matched by a source are not read (listed in manifest.json):")
    for s in skipped[:SHOWN_SKIPPED]:
        console.print(f"[yellow]  skipped {escape(s.path)} ({escape(s.source)}): {escape(s.reason)}", soft_wrap=True)
    if len(skipped) > SHOWN_SKIPPED:
        console.print(f"[yellow]  … and {len(skipped) - SHOWN_SKIPPED} more")


def make_executor(kind: str, steps: list, tasks: int, workers: int, logging_dir: Path,
                  start_method: str = "forkserver"):
    """The same steps on datatrove's local executor (its workers started by `start_method`), or on
    Ray (`ray.init` must have run)."""
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(steps, tasks=tasks, workers=min(workers, tasks), logging_dir=str(logging_dir),
                                   cpus_per_task=1, mem_per_cpu_gb=0.5)
    return LocalPipelineExecutor(steps, tasks=tasks, workers=min(workers, tasks), logging_dir=str(logging_dir),
                                 start_method=start_method)


@contextmanager
def ray_session(executor: str, address: str | None, workers: int) -> Iterator[None]:
    """For the Ray executor: connect to `address` (or start a local Ray of `workers` CPUs) unless Ray
    already runs here, and stop what was started."""
    if executor != "ray":
        yield
        return
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else max(1, workers), include_dashboard=False,
                 log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


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
    current = json.loads(recipe.model_dump_json())
    same_run_or_refuse(out / WORK / "recipe.json", current, differs_in(
        current, f"{out} holds a build of another recipe (or settings); use a new --out, or delete {out} to rebuild"))


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
          dry_run: bool = False) -> CorpusStats | BuildSubmitted | BuildPlan:
    """Run the recipe into `out`; returns its stats. `executor="ray"` connects to `ray_address`
    (or starts a local Ray) and stops what it started. `executor="slurm"` submits array jobs and a
    final job that finishes the corpus, and returns their job ids at once (with `dry_run`, their
    scripts, and nothing is written)."""
    if executor not in EXECUTORS:
        raise GptnlError(f"--executor {executor!r}: allowed values are {', '.join(EXECUTORS)}")
    if executor == "slurm" and cluster is None:
        raise GptnlError("--executor slurm needs --cluster (a profile under slurm/clusters/)")
    out = Path(out).resolve()
    sources = load_sources(recipe.sources)
    files, skipped = discover(sources.sources, recipe.sources.parent)
    note_skipped(skipped)
    if not files:
        raise GptnlError(f"{recipe.sources}: no file matches any source's path and format")
    if executor == "slurm" and dry_run:
        from gptnl.data_pipeline.slurm import scripts

        return BuildPlan(scripts=scripts(recipe_path, recipe, out, load_cluster(cluster), workers))
    _same_recipe_or_refuse(out, recipe)
    if executor == "slurm":
        from gptnl.data_pipeline.slurm import submit

        return BuildSubmitted(**submit(recipe_path, recipe, out, load_cluster(cluster), workers))
    workers = workers or 1
    with ray_session(executor, ray_address, workers):
        run_stages(recipe, out, workers, executor)
    return finalise(recipe_path, recipe, out, sources, files, skipped)


def finalise(recipe_path: Path, recipe: RecipeConfig, out: Path, sources, files,
             skipped: list[Skipped] = ()) -> CorpusStats:
    """Ledger check, stats, card and manifest, from the finished stages' outputs."""
    totals = stat_totals(out / WORK / "logs" / "filter")
    inputs = {s.name: int(totals.get(f"input/{s.name}", 0)) for s in sources.sources}
    counts = ledger_mod.assemble(out / WORK / "ledger", inputs, out)
    stats = ledger_mod.corpus_stats(iter_jsonl(out / ledger_mod.LEDGER), counts, totals, recipe.pii.mode)
    stats.composition = composition(out, recipe.count_tokens_with)
    write_stats(out, stats)
    write_card(out, recipe, sources, stats)
    write_manifest(out, CorpusManifest(
        consumed=CorpusInputs(recipe=str(Path(recipe_path).resolve()),
                              files=[FileDigest(path=str(p), sha256=sha256_file(p)) for _, p in files],
                              skipped=[SkippedPath(source=s.source, path=s.path, reason=s.reason) for s in skipped]),
        produced=CorpusOutputs(documents=stats.kept, ledger=ledger_mod.LEDGER,
                               shards=[p.relative_to(out / "documents").as_posix() for p in document_files(out)]),
        config=json.loads(recipe.model_dump_json())))
    return stats
