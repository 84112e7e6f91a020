"""The corpus build's stages as datatrove step lists: the filter stage, then a plain copy or MinHash's
four stages. Shared by the local/Ray run (`build.py`) and the Slurm array jobs (`slurm.py`)."""

from __future__ import annotations

from pathlib import Path

from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers.jsonl import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter

from gptnl.config import RecipeConfig, load_licence_policy, load_sources
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.boilerplate import DutchBoilerplateFilter
from gptnl.data_pipeline.decontaminate import Decontaminator
from gptnl.data_pipeline.dedup import ExactDedupFilter
from gptnl.data_pipeline.extract import HtmlExtractor
from gptnl.data_pipeline.gates import LicenceFilter, MalformedGate, OptOutFilter, read_blocklist
from gptnl.data_pipeline.langid import DutchLanguageFilter
from gptnl.data_pipeline.normalise import Normaliser
from gptnl.data_pipeline.quality import RegexWordTokenizer, per_language_filters, quality_filters
from gptnl.data_pipeline.reader import SourceReader
from gptnl.data_pipeline.scrub import PiiScrubber

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
        SourceReader(sources.sources, recipe.sources.parent, recipe.reader),
        MalformedGate(exclusion_writer=ledger_writer(out, "malformed")),
        LicenceFilter(load_licence_policy(recipe.licences), exclusion_writer=ledger_writer(out, "licence")),
        OptOutFilter(read_blocklist(recipe.blocklist), exclusion_writer=ledger_writer(out, "opt-out")),
        HtmlExtractor(exclusion_writer=ledger_writer(out, "html")),
        Normaliser(),
        DutchLanguageFilter(recipe.language.keep, recipe.language.min_score,
                            exclusion_writer=ledger_writer(out, "language")),
        DutchBoilerplateFilter(exclusion_writer=ledger_writer(out, "boilerplate")),
        *quality_steps(recipe, out),
        PiiScrubber(recipe.pii.mode, recipe.pii.seed, names=recipe.pii.names, ner=recipe.pii.ner),
    ]
    if recipe.exact_dedup:
        steps.append(ExactDedupFilter(exclusion_writer=ledger_writer(out, "dedup")))
    if recipe.decontamination.tasks is not None:
        steps.append(Decontaminator(recipe.decontamination.tasks, recipe.decontamination.n_grams,
                                    exclusion_writer=ledger_writer(out, "decontamination")))
    return steps + [JsonlWriter(str(out / WORK / "filtered"), output_filename="${rank}.jsonl.gz",
                                adapter=DocumentRow())]


def quality_steps(recipe: RecipeConfig, out: Path) -> list:
    """Gopher quality, repetition and C4, with the kept language's thresholds (each language's own
    when the recipe keeps several)."""
    langs = recipe.language.languages
    if len(langs) == 1:
        return quality_filters(recipe.quality_for(langs[0]), lambda step: ledger_writer(out, step))
    return per_language_filters({lang: recipe.quality_for(lang) for lang in langs},
                                lambda step: ledger_writer(out, step))


def document_files(recipe: RecipeConfig) -> str:
    """Where the kept documents go: `documents/`, or `documents/<lang>/` per kept language."""
    return "${lang}/${rank}.jsonl.gz" if len(recipe.language.languages) > 1 else "${rank}.jsonl.gz"


def ledger_writer(out: Path, step: str, default_reason: str = "", outcome: str = "refused") -> JsonlWriter:
    name = "kept" if outcome == "kept" else step
    return JsonlWriter(str(out / WORK / "ledger"), output_filename=f"{name}-${{rank}}.jsonl", compression=None,
                       adapter=ledger_mod.LedgerRow(step, outcome=outcome, default_reason=default_reason))


def final_writers(out: Path, recipe: RecipeConfig) -> list:
    return [JsonlWriter(str(out / "documents"), output_filename=document_files(recipe), adapter=DocumentRow()),
            ledger_writer(out, "", outcome="kept")]


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
        return [first, ([reader(), *final_writers(out, recipe)], recipe.tasks, "write")]
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
          *final_writers(out, recipe)], recipe.tasks, "near-dedup"),
    ]
