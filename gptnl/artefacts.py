"""The stages' manifests, typed: what each stage read (paths, checksums), made, and with which
settings, in `OUT/manifest.json`.

Stages talk through these files, not imports, so the file is the interface: one pydantic model per
stage, written by `write_manifest` and read back by `read_manifest` (which names the file and the
field when a manifest is not what its stage writes). `schema_version` says which layout a file has;
a manifest from before it was recorded reads as version 1. Evaluation records are typed in
`gptnl.evals.results` (`ResultRecord`, schema `gptnl.eval.result/1`); weights are named everywhere by
`fileio.weights_fingerprint`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from gptnl.config.pack import PackSettings
from gptnl.errors import GptnlError
from gptnl.fileio import atomic_write_json, code_version

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileDigest(_Record):
    path: str
    sha256: str


class TokenizerRef(_Record):
    path: str
    checksum: str


class BaseModelRef(_Record):
    """The open model a continued pre-training run started from."""
    path: str
    fingerprint: str
    licence: str | None = None


class _Manifest(_Record):
    schema_version: int = SCHEMA_VERSION
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    code_version: str = Field(default_factory=code_version)
    config: dict[str, Any]


# --- data: `gptnl data build` -------------------------------------------------------------------

class SkippedPath(_Record):
    source: str
    path: str
    reason: str


class CorpusInputs(_Record):
    recipe: str
    files: list[FileDigest]
    skipped: list[SkippedPath] = []


class CorpusOutputs(_Record):
    documents: int
    ledger: str
    shards: list[str]  # the kept documents' files, relative to `documents/`


class CorpusManifest(_Manifest):
    stage: Literal["data"] = "data"
    consumed: CorpusInputs
    produced: CorpusOutputs


class SourceCounts(_Record):
    inputs: int
    kept: int = 0
    refused: int = 0


class OptOuts(_Record):
    tdm: int = 0
    blocklist: int = 0


class Takedown(_Record):
    date: str
    time: str | None = None
    entries: list[str]
    removed: int


class CompositionRow(_Record):
    source: str
    licence: str
    lang: str
    documents: int
    words: int
    tokens: int | None = None


class LanguageCounts(_Record):
    documents: int
    words: int
    tokens: int | None = None


class Composition(_Record):
    """What was kept, per source, licence and language (and a named tokenizer's tokens)."""
    rows: list[CompositionRow]
    languages: dict[str, LanguageCounts]
    tokenizer: TokenizerRef | None = None


class CorpusStats(_Record):
    """`stats.json`, what `gptnl data build` returns: every input kept or refused, counted."""
    sources: dict[str, SourceCounts]
    licences: dict[str, int]  # kept documents per licence
    inputs: int
    kept: int
    refused: int
    refused_by_step: dict[str, dict[str, int]]  # step: reason: documents
    pii: dict[str, int]  # replaced, per kind
    pii_mode: str
    opt_outs: OptOuts
    composition: Composition | None = None
    takedowns: list[Takedown] = []


class BuildSubmitted(_Record):
    """`gptnl data build --executor slurm`: the stages' array jobs and the job that finishes the corpus."""
    jobs: dict[str, str | int]
    finalise: str | int
    logs: str


class BuildPlan(_Record):
    """`gptnl slurm submit data --dry-run`: every stage's sbatch script, as it would be sent."""
    scripts: list[tuple[str, str]]


def read_stats(corpus: Path) -> CorpusStats:
    file = Path(corpus) / "stats.json"
    try:
        return CorpusStats.model_validate_json(file.read_bytes())
    except FileNotFoundError:
        raise GptnlError(f"{corpus}: not a corpus built by `gptnl data build` (no stats.json)") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise GptnlError(f"{file}: not a corpus's stats ({'.'.join(map(str, first['loc']))}: {first['msg']})") from None


def write_stats(corpus: Path, stats: CorpusStats) -> CorpusStats:
    atomic_write_json(Path(corpus) / "stats.json", json.loads(stats.model_dump_json()))
    return stats


# --- tokenizer: `gptnl tokenizer train|extend` ---------------------------------------------------

class TokenizerInputs(_Record):
    corpus: str | None = None
    base: str | None = None  # an extension's base tokenizer
    base_checksum: str | None = None


class TokenizerOutputs(_Record):
    vocab_size: int
    checksum: str
    added: int | None = None  # tokens an extension added


class TokenizerManifest(_Manifest):
    stage: Literal["tokenizer"] = "tokenizer"
    consumed: TokenizerInputs
    produced: TokenizerOutputs


# --- pack: `gptnl pack` ---------------------------------------------------------------------------

class ShardFile(_Record):
    file: str
    sequences: int
    sha256: str


class SplitOutputs(_Record):
    documents: int
    tokens: int
    sequences: int
    tokens_dropped: int
    shards: list[ShardFile]


class ShardsInputs(_Record):
    corpus: str
    files: list[FileDigest]
    tokenizer: TokenizerRef


class ShardsOutputs(_Record):
    dtype: str
    seq_len: int
    vocab_size: int
    eos_id: int
    bos_ids: list[int] = []
    splits: dict[str, SplitOutputs]


class ShardsManifest(_Manifest):
    stage: Literal["pack"] = "pack"
    consumed: ShardsInputs
    produced: ShardsOutputs
    config: PackSettings


# --- train: `gptnl train` -------------------------------------------------------------------------

class RunInputs(_Record):
    shards: str  # a mixture's first source
    mixture: dict[str, str] | None = None  # source name: its shards
    tokenizer: TokenizerRef
    base_model: BaseModelRef | None = None


class SourceSeen(_Record):
    tokens_seen: int
    epoch: int


class RunOutputs(_Record):
    step: int
    checkpoint: str
    tokens_seen: int
    parameters: int
    sources: dict[str, SourceSeen] = {}  # a mixture's share: what the run took of each source

    @model_validator(mode="before")
    @classmethod
    def _flat_sources(cls, data: Any) -> Any:
        """Runs from before the typed manifest kept the share flat (`tokens_seen/nl`, `epoch/nl`)."""
        if not isinstance(data, dict) or not any("/" in k for k in data):
            return data
        flat = {k: v for k, v in data.items() if "/" not in k}
        sources = dict(flat.get("sources") or {})
        for key, value in data.items():
            field, _, name = key.partition("/")
            if name and field in ("tokens_seen", "epoch"):
                sources.setdefault(name, {})[field] = value
            elif name:
                flat[key] = value  # not a known flat key: let validation name it
        return {**flat, "sources": sources}


class RunManifest(_Manifest):
    stage: Literal["train"] = "train"
    consumed: RunInputs
    produced: RunOutputs


# --- export: `gptnl export` (and the demo's random-init baseline) --------------------------------

class ModelInputs(_Record):
    run_dir: str | None = None
    checkpoint: str | None = None
    shards: str | None = None
    base_model: BaseModelRef | None = None
    tokenizer: TokenizerRef


class ModelOutputs(_Record):
    format: str
    dtype: str
    parameters: int
    step: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None


class ModelManifest(_Manifest):
    stage: Literal["export"] = "export"
    consumed: ModelInputs
    produced: ModelOutputs


# --- finetune: `gptnl finetune` ------------------------------------------------------------------

class SftInputs(_Record):
    base: str
    data: dict[str, Any]  # the conversations' counts: read, train, val, refused (by reason), pii
    base_manifest: str | None = None  # the base's manifest `created`: a re-exported base is a new base


class SftOutputs(_Record):
    method: str
    steps: int
    weights: dict[str, str]  # safetensors file: sha256
    val_loss_before: float | None = None
    val_loss_after: float | None = None


class SftManifest(_Manifest):
    stage: Literal["finetune"] = "finetune"
    consumed: SftInputs
    produced: SftOutputs


Manifest = Annotated[CorpusManifest | TokenizerManifest | ShardsManifest | RunManifest | ModelManifest | SftManifest,
                     Field(discriminator="stage")]
_ANY = TypeAdapter(Manifest)
M = TypeVar("M", bound=_Manifest)
WHAT = {"data": "a corpus built by `gptnl data build`", "tokenizer": "a tokenizer written by gptnl",
        "pack": "a shards dir written by `gptnl pack`", "train": "a training run of `gptnl train`",
        "export": "a model exported by gptnl", "finetune": "a model tuned by `gptnl finetune`"}


def write_manifest(out: Path, manifest: M) -> M:
    """`out/manifest.json`, atomically."""
    atomic_write_json(Path(out) / "manifest.json", json.loads(manifest.model_dump_json()))
    return manifest


def manifest_or_none(path: Path, kind: type[M] | None = None) -> M | None:
    """The manifest, or None where there is none or it is not a valid one: for readers that describe
    whatever they find (model cards, the demo report, takedown's search) rather than consume it."""
    try:
        return read_manifest(path, kind)
    except GptnlError:
        return None


def read_manifest(path: Path, kind: type[M] | None = None) -> M:
    """The manifest of the stage dir `path`, as its stage's model; with `kind`, that stage only."""
    file = Path(path) / "manifest.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptnlError(f"{path}: no manifest.json (was this dir written by gptnl?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptnlError(f"{file}: unreadable manifest ({exc})") from None
    stage = raw.get("stage") if isinstance(raw, dict) else None
    if kind is not None:
        want = kind.model_fields["stage"].default
        if stage != want:
            raise GptnlError(f"{path}: not {WHAT[want]} (its manifest says stage {stage!r})")
    if isinstance(raw, dict) and raw.get("schema_version", 1) > SCHEMA_VERSION:
        raise GptnlError(f"{file}: manifest schema version {raw['schema_version']} is newer than this gptnl "
                         f"reads ({SCHEMA_VERSION}); upgrade gptnl")
    try:
        return (kind or _ANY).model_validate(raw) if kind else _ANY.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"][1:] if not kind and first["loc"][:1] == (stage,) else first["loc"]  # the union's tag
        where = ".".join(str(p) for p in loc)
        raise GptnlError(f"{file}: not a valid {stage or 'stage'} manifest ({where}: {first['msg']})") from None
