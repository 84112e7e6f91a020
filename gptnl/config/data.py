"""The corpus pipeline: licence policy, sources and the recipe of steps."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gptnl.config.base import ConfigPath, Strict, read_yaml, validate


class LicenceTerms(Strict):
    """What an admitted licence obliges the corpus (and models trained on it) to carry along."""

    attribution: bool = False
    share_alike: bool = False


class PublicDomainCategory(Strict):
    licence: str = Field(min_length=1, description="the id written on documents of this category")
    description: str


class LicencePolicy(Strict):
    """`data_pipeline/licences.yaml`: SPDX ids admitted, and public-domain categories."""

    allow: dict[str, LicenceTerms] = Field(min_length=1)
    public_domain: dict[str, PublicDomainCategory] = {}


class SourceConfig(Strict):
    """One entry of `data_pipeline/sources.yaml`: where documents come from and under what terms."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    path: str = Field(min_length=1, description="glob, relative to sources.yaml")
    format: Literal["jsonl", "parquet", "txt", "warc"] = Field(
        default="jsonl", description="jsonl (.jsonl/.jsonl.gz), parquet, txt (one document per file), warc (WARC/WET)")
    licence: str | None = Field(default=None, description="SPDX id for documents that carry none")
    licence_field: str = Field(default="licence", description="per-document override of the licence")
    publisher: str
    url: str
    retrieved: str = Field(description="ISO date the source was retrieved")
    tdm_reservation: bool = Field(default=False, description="the rights holder reserved text and data mining")


class SourcesFile(Strict):
    sources: list[SourceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SourcesFile:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self


class ReaderStep(Strict):
    """Bounds on what one input record may cost: a longer record (a JSONL line, a WARC record, a
    text file, a Parquet text) is a malformed row, read in bounded pieces, so a gzip bomb cannot
    exhaust memory. 8 MiB is 80 times the longest document the quality step keeps (100,000 words)."""

    max_record_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="bytes per record, uncompressed")


class LanguageStep(Strict):
    """The languages a corpus keeps. One (`keep: nl`), or several (`keep: [nl, en]`): then each kept
    language is written to its own folder, `documents/<lang>/`, a mixture source of its own, and
    `min_score` may give each language its own threshold (`{nl: 0.65, en: 0.8}`)."""

    keep: str | list[str] = Field(default="nl", description="a py3langid code, or a list of them")
    min_score: float | dict[str, float] = Field(default=0.65, description="one threshold, or one per kept language")

    @property
    def languages(self) -> list[str]:
        return [self.keep] if isinstance(self.keep, str) else list(self.keep)

    def threshold(self, lang: str) -> float:
        return self.min_score if isinstance(self.min_score, float | int) else self.min_score[lang]

    @model_validator(mode="after")
    def _consistent(self) -> LanguageStep:
        langs = self.languages
        if not langs or len(set(langs)) != len(langs):
            raise ValueError(f"keep: one or more distinct language codes, got {self.keep}")
        scores = [self.min_score] if isinstance(self.min_score, float | int) else list(self.min_score.values())
        if any(not 0 <= v <= 1 for v in scores):
            raise ValueError(f"min_score: thresholds lie in [0, 1], got {self.min_score}")
        if isinstance(self.min_score, dict) and sorted(self.min_score) != sorted(langs):
            raise ValueError(f"min_score: one threshold per kept language ({', '.join(langs)}), "
                             f"got {', '.join(self.min_score) or 'none'}")
        return self


class PiiStep(Strict):
    mode: Literal["placeholder", "surrogate"] = "placeholder"
    seed: int = 0


class NerBackend(Strict):
    """A local person-name model, never downloaded: a Hugging Face token-classification folder or a
    spaCy pipeline folder. Its path is relative to the recipe."""

    kind: Literal["hf", "spacy"]
    path: ConfigPath
    labels: list[str] = Field(default=["PER", "PERSON"], min_length=1, description="entity labels that are persons")
    min_score: float = Field(default=0.9, ge=0, le=1, description="hf only: lower-scored entities are left alone")


class CorpusPiiStep(PiiStep):
    """The corpus build's PII step: the kinds of `gptnl.pii`, and person names."""

    names: bool = Field(default=True, description="names marked by titles, salutations, signatures, 'namens'")
    ner: NerBackend | None = Field(default=None, description="a local NER model for names as well; null: off")


class QualityStep(Strict):
    """Gopher quality and repetition thresholds; defaults from FineWeb-2's `nld_Latn` config except
    the alpha-word share (see the recipe)."""

    min_doc_words: int = Field(default=50, ge=0)
    max_doc_words: int = Field(default=100000, gt=0)
    min_avg_word_length: float = Field(default=3, ge=0)
    max_avg_word_length: float = Field(default=16, gt=0)
    max_symbol_word_ratio: float = Field(default=0.1, ge=0)
    max_bullet_lines_ratio: float = Field(default=0.9, ge=0)
    max_ellipsis_lines_ratio: float = Field(default=0.3, ge=0)
    max_non_alpha_words_ratio: float = Field(default=0.7, ge=0, le=1, description="share of tokens with a letter")
    min_stop_words: int = Field(default=2, ge=0)
    stop_words: list[str] = ["de", "van", "in", "het", "een", "en", "is", "op", "voor", "met", "door", "zijn", "werd",
                             "hij", "uit"]
    max_duplicate_line_fraction: float = Field(default=0.333, ge=0, le=1)
    top_n_grams: list[tuple[int, float]] = [(2, 0.093), (3, 0.117), (4, 0.14)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.177), (6, 0.16), (7, 0.145), (8, 0.133), (9, 0.123), (10, 0.112)]
    min_sentences: int = Field(default=5, ge=0, description="C4: fewer sentences and the document is refused")


# Gopher's own settings (datatrove's defaults, as FineWeb runs English) with its English stop words;
# the alpha-word share stays at the Dutch recipe's 0.7, because the word tokeniser counts
# punctuation as words (see the default recipe).
ENGLISH_QUALITY = QualityStep(
    max_avg_word_length=10, stop_words=["the", "be", "to", "of", "and", "that", "have", "with"],
    max_duplicate_line_fraction=0.3, top_n_grams=[(2, 0.2), (3, 0.18), (4, 0.16)],
    dup_n_grams=[(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])


class NearDedupStep(Strict):
    """MinHash near-duplicate removal (datatrove's four stages): 5-gram shingles, 14 bands of 8."""

    enabled: bool = True
    n_grams: int = Field(default=5, gt=0)
    num_buckets: int = Field(default=14, gt=0)
    hashes_per_bucket: int = Field(default=8, gt=0)
    seed: int = 1


class DecontaminationStep(Strict):
    tasks: ConfigPath | None = Field(default=Path("../../evals/tasks"), description="evaluation tasks dir; null: off")
    n_grams: int = Field(default=13, gt=0)


class RecipeConfig(Strict):
    """`data_pipeline/recipes/*.yaml`: which sources, which policy, which steps with which settings.
    Paths are relative to the recipe file."""

    sources: ConfigPath = Path("../sources.yaml")
    licences: ConfigPath = Path("../licences.yaml")
    blocklist: ConfigPath | None = Field(default=None, description="ids, urls and domains to refuse, one per line")
    reader: ReaderStep = ReaderStep()
    language: LanguageStep = LanguageStep()
    pii: CorpusPiiStep = CorpusPiiStep()
    quality: QualityStep = Field(default=QualityStep(), description="Dutch's thresholds (FineWeb-2 nld_Latn)")
    quality_by_language: dict[str, QualityStep] = Field(
        default={}, description="another kept language's thresholds; English defaults to Gopher's")
    exact_dedup: bool = True
    near_dedup: NearDedupStep = NearDedupStep()
    decontamination: DecontaminationStep = DecontaminationStep()
    tasks: int = Field(default=1, gt=0, description="input shards processed in parallel")
    count_tokens_with: ConfigPath | None = Field(
        default=None, description="a tokenizer folder: stats.json and the card also count its tokens kept per "
                                  "source, licence and language")

    def quality_for(self, lang: str) -> QualityStep:
        """A kept language's quality thresholds: its `quality_by_language` entry, else `quality` for
        Dutch and Gopher's for English."""
        if lang in self.quality_by_language:
            return self.quality_by_language[lang]
        return self.quality if lang == "nl" else ENGLISH_QUALITY

    @model_validator(mode="after")
    def _quality_per_kept_language(self) -> RecipeConfig:
        missing = [lang for lang in self.language.languages
                   if lang not in self.quality_by_language and lang not in ("nl", "en")]
        if missing:
            raise ValueError(f"language.keep: {', '.join(missing)} has no quality thresholds; give them under "
                             f"quality_by_language.{missing[0]} (built in: nl, en)")
        return self


def load_licence_policy(path: Path) -> LicencePolicy:
    return validate(LicencePolicy, read_yaml(path), str(path))


def load_sources(path: Path) -> SourcesFile:
    return validate(SourcesFile, read_yaml(path), str(path))


def load_recipe(path: Path) -> RecipeConfig:
    """A recipe, with its paths resolved against the recipe's folder."""
    path = Path(path)
    return validate(RecipeConfig, read_yaml(path), str(path), path.parent)
