"""Typed configs for every YAML a user writes, and the one loader that validates them.

Defaults live here and nowhere else. Errors name the file, the field and what is allowed, so a
typo in a training config fails in the first second instead of after the DeepSpeed start-up.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gptnl.errors import ConfigError


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt `gradient_clip` must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RopeScaling(Strict):
    """RoPE frequency scaling as Hugging Face's Llama applies it: `llama3` (Llama 3.1's smooth
    interpolation, used by Salamandra-style long-context checkpoints) or `linear` (position
    interpolation). The fields are HF's own names, so a base model's config.json reads as is."""

    rope_type: Literal["llama3", "linear"]
    factor: float = Field(gt=0)
    low_freq_factor: float | None = Field(default=None, gt=0, description="llama3 only")
    high_freq_factor: float | None = Field(default=None, gt=0, description="llama3 only")
    original_max_position_embeddings: int | None = Field(default=None, gt=0, description="llama3 only")

    @model_validator(mode="after")
    def _llama3_fields(self) -> RopeScaling:
        needed = ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [f for f in needed if getattr(self, f) is None]
        if self.rope_type == "llama3" and missing:
            raise ValueError(f"rope_type llama3 needs {', '.join(missing)}")
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError("rope_type llama3 needs high_freq_factor > low_freq_factor")
        return self


class ModelConfig(Strict):
    """Llama-architecture dimensions (the names follow Meta's `params.json`)."""

    name: str = "gptnl"
    vocab_size: int | None = Field(
        default=None, gt=0, description="null: taken from the tokenizer, rounded up to a multiple of 64"
    )
    dim: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int | None = Field(default=None, gt=0, description="null: same as n_heads (no GQA)")
    ffn_dim: int = Field(gt=0)
    max_seq_len: int = Field(default=2048, gt=0)
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: RopeScaling | None = None
    norm_eps: float = Field(default=1e-5, gt=0)
    tie_embeddings: bool = False
    init_std: float = Field(default=0.02, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head dim dim/n_heads = {self.dim // self.n_heads} must be even for RoPE")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def with_vocab(self, tokenizer_vocab: int) -> ModelConfig:
        """The config with `vocab_size` filled in from the tokenizer (rounded up to 64 for fast matmuls)."""
        if self.vocab_size is not None:
            if self.vocab_size < tokenizer_vocab:
                raise ConfigError(
                    f"model vocab_size {self.vocab_size} is smaller than the tokenizer's {tokenizer_vocab} tokens"
                )
            return self
        return self.model_copy(update={"vocab_size": -(-tokenizer_vocab // 64) * 64})


class OptimConfig(Strict):
    """AdamW with linear warmup and cosine decay to `min_lr`."""

    lr: float = Field(default=3e-4, gt=0)
    min_lr: float = Field(default=3e-5, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=1.0, ge=0, description="global-norm clip; 0 disables it")

    @model_validator(mode="after")
    def _min_below_max(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


class BatchConfig(Strict):
    micro_batch_size: int = Field(default=8, gt=0, description="sequences per process per micro-step")
    grad_accum_steps: int = Field(default=1, gt=0)


class MixtureSource(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="names the source in metrics (tokens_seen/NAME)")
    shards: Path = Field(description="output dir of `gptnl pack` (relative to the config file)")
    weight: float = Field(ge=0, description="share of the training sequences; weights are normalised")


class MixtureStage(Strict):
    """A curriculum stage: these weights until `until_step`; after the last stage, the sources' own."""

    until_step: int = Field(gt=0)
    weights: dict[str, float]


class MixtureConfig(Strict):
    """Weighted shard sets (e.g. nl 0.6, en 0.3, code 0.1), optionally in curriculum stages."""

    sources: list[MixtureSource] = Field(min_length=1)
    stages: list[MixtureStage] = []
    exhausted: Literal["repeat", "refuse"] = Field(default="repeat", description=(
        "a source the run needs more sequences of than it has: repeat it (a new epoch, logged) or refuse "
        "the run before it starts"))
    allow_change: bool = Field(default=False, description=(
        "on resume, accept a mixture that differs from the one the run started with (the change is recorded)"))

    @model_validator(mode="after")
    def _consistent(self) -> MixtureConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique (got {', '.join(names)})")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("the sources' weights sum to 0")
        last = 0
        for stage in self.stages:
            if stage.until_step <= last:
                raise ValueError("stages: until_step must increase from stage to stage")
            last = stage.until_step
            unknown = sorted(set(stage.weights) - set(names))
            if unknown:
                raise ValueError(f"stage until_step {stage.until_step}: unknown source {unknown[0]}; "
                                 f"sources: {', '.join(names)}")
            if any(w < 0 for w in stage.weights.values()) or sum(stage.weights.values()) <= 0:
                raise ValueError(f"stage until_step {stage.until_step}: weights must be >= 0 and not all 0")
        return self


class DataConfig(Strict):
    shards: Path | None = Field(default=None, description="output dir of `gptnl pack`")
    mixture: MixtureConfig | None = Field(default=None, description="several shard sets with weights (not with shards)")
    seed: int = 1234

    @model_validator(mode="after")
    def _one_kind(self) -> DataConfig:
        if self.shards is not None and self.mixture is not None:
            raise ValueError("give either shards or mixture, not both")
        return self


class EvalConfig(Strict):
    every: int = Field(default=100, ge=0, description="0 disables validation")
    batches: int = Field(default=8, gt=0, description="micro-batches per process per validation")
    tasks: list[str] = Field(default=[], description=(
        "evaluation tasks (log-likelihood ones: multiple_choice, pairs) scored in-process at each validation, "
        "each task's primary metric logged as eval/TASK/METRIC"))
    task_limit: int | None = Field(default=64, gt=0, description="items per task at each evaluation (null: all)")


class CheckpointConfig(Strict):
    every: int = Field(default=100, ge=0, description="0: only on signals and at the end")
    keep_last: int = Field(default=3, gt=0)
    integrity: Literal["sha256", "size"] = Field(
        default="sha256", description="how a checkpoint's completeness is proven before it is resumed"
    )


class MetricsConfig(Strict):
    log_every: int = Field(default=10, gt=0)
    tensorboard: bool = True
    peak_tflops: float | None = Field(
        default=None, gt=0, description="per-device peak for MFU; null: known GPUs only, none on CPU"
    )


class TrainConfig(Strict):
    """One training run. `model` is a path (relative to this file) or the model mapping inline;
    with `init_from` (continued pre-training) it may be left out and is read from the base model."""

    model: ModelConfig | None = None
    init_from: Path | None = Field(default=None, description=(
        "a local Hugging Face LlamaForCausalLM folder to continue from (relative to this file)"))
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    batch: BatchConfig = BatchConfig()
    max_steps: int = Field(gt=0)
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 on GPU, fp32 on CPU")
    activation_checkpointing: bool = False
    document_masking: bool = Field(default=False, description=(
        "attention stays inside each packed document (an EOS ends one); off: documents packed into one "
        "sequence see the ones before them, as in GPT-2-style packing"))
    compile: bool = Field(default=False, description=(
        "torch.compile the model and the loss (Inductor fuses norms, RoPE, SwiGLU and the cross-entropy); "
        "the first steps of each process are slower while it compiles"))
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _a_model(self) -> TrainConfig:
        if self.model is None and self.init_from is None:
            raise ValueError("model: required field is missing (or give init_from, a base model to continue)")
        return self


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
    keep: str = "nl"
    min_score: float = Field(default=0.65, ge=0, le=1)


class PiiStep(Strict):
    mode: Literal["placeholder", "surrogate"] = "placeholder"
    seed: int = 0


class NerBackend(Strict):
    """A local person-name model, never downloaded: a Hugging Face token-classification folder or a
    spaCy pipeline folder. Its path is relative to the recipe."""

    kind: Literal["hf", "spacy"]
    path: Path
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


class NearDedupStep(Strict):
    """MinHash near-duplicate removal (datatrove's four stages): 5-gram shingles, 14 bands of 8."""

    enabled: bool = True
    n_grams: int = Field(default=5, gt=0)
    num_buckets: int = Field(default=14, gt=0)
    hashes_per_bucket: int = Field(default=8, gt=0)
    seed: int = 1


class DecontaminationStep(Strict):
    tasks: Path | None = Field(default=Path("../../evals/tasks"), description="evaluation tasks dir; null: off")
    n_grams: int = Field(default=13, gt=0)


class RecipeConfig(Strict):
    """`data_pipeline/recipes/*.yaml`: which sources, which policy, which steps with which settings.
    Paths are relative to the recipe file."""

    sources: Path = Path("../sources.yaml")
    licences: Path = Path("../licences.yaml")
    blocklist: Path | None = Field(default=None, description="ids, urls and domains to refuse, one per line")
    reader: ReaderStep = ReaderStep()
    language: LanguageStep = LanguageStep()
    pii: CorpusPiiStep = CorpusPiiStep()
    quality: QualityStep = QualityStep()
    exact_dedup: bool = True
    near_dedup: NearDedupStep = NearDedupStep()
    decontamination: DecontaminationStep = DecontaminationStep()
    tasks: int = Field(default=1, gt=0, description="input shards processed in parallel")


class LoraSettings(Strict):
    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1)


class SftBatch(Strict):
    """The global batch (conversations per optimizer step) is fixed; accumulation makes up the rest,
    so 1 and N processes take the same steps on the same conversations."""

    global_batch_size: int = Field(default=32, gt=0, description="conversations per optimizer step")
    micro_batch_size: int = Field(default=4, gt=0, description="conversations per process per forward pass")


class SftData(Strict):
    """Gates the instruction data passes, as corpus documents do. Paths are relative to the config file."""

    licences: Path = Path("../../data_pipeline/licences.yaml")
    pii: PiiStep = PiiStep()
    decontamination: DecontaminationStep = DecontaminationStep()
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="held out by a hash of the conversation id")


class FinetuneConfig(Strict):
    """`configs/finetune/*.yaml`: supervised fine-tuning on chat data, loss on assistant tokens only."""

    method: Literal["full", "lora"] = "full"
    lora: LoraSettings = LoraSettings()
    backend: Literal["deepspeed", "ddp"] = Field(
        default="deepspeed", description="accelerate with the DeepSpeed plugin, or plain DDP")
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16"] = Field(default="auto", description="auto: bf16 on GPU, fp32 on CPU")
    seq_len: int = Field(default=2048, gt=0, description="longer conversations are refused, never cut")
    batch: SftBatch = SftBatch()
    optim: OptimConfig = OptimConfig(lr=2e-5, min_lr=2e-6, weight_decay=0.0, warmup_steps=10)
    max_steps: int = Field(gt=0)
    seed: int = 1234
    data: SftData = SftData()
    eval_every: int = Field(default=50, ge=0, description="held-out loss every N steps; 0: before and after only")
    checkpoint: CheckpointConfig = CheckpointConfig()
    log_every: int = Field(default=1, gt=0)

class VllmProfile(Strict):
    """`serving/profiles/*.yaml`: how vLLM is started on a kind of machine."""

    args: list[str] = Field(default_factory=list, description="extra api_server arguments (dtype, eager, TP size)")
    env: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: float = Field(default=600, gt=0)


class ServedModel(Strict):
    path: Path | None = Field(default=None, description="HF model folder; needed when the gateway starts vLLM")
    max_tokens: int = Field(default=512, gt=0, description="largest max_tokens a request may ask for")
    max_model_len: int = Field(default=2048, gt=0)
    replicas: int = Field(default=1, ge=0, description="vLLM servers the gateway starts and supervises")
    upstreams: list[str] = Field(default_factory=list, description="running vLLM servers to use as well")
    profile: str = "cpu"
    embeddings: bool = Field(default=False, description="the upstream serves /v1/embeddings")

    @model_validator(mode="after")
    def _somewhere(self) -> ServedModel:
        if self.replicas == 0 and not self.upstreams:
            raise ValueError("give replicas > 0 (with path) or at least one upstream URL")
        if self.replicas and self.path is None:
            raise ValueError("path is required when the gateway starts replicas")
        return self


class LimitsStore(Strict):
    """A Valkey/Redis server that several gateways share for limits, budgets and revocations."""

    url: str = Field(pattern=r"^(redis|rediss|unix)://", description="e.g. redis://127.0.0.1:6379/0")
    prefix: str = Field(default="gptnl", min_length=1, description="prefix of every key the gateways write")
    lease_ttl_s: float = Field(default=30, gt=0, description="a killed gateway's slots come back after this")
    timeout_s: float = Field(default=2, gt=0, description="no answer within this: requests are refused (503)")


class GatewayConfig(Strict):
    """`serving/gateway.yaml`. Paths are relative to the file."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, lt=65536)
    keys: Path = Path("keys.json")
    audit: Path = Path("audit.jsonl")
    audit_fsync: bool = False
    logs: Path = Path("logs")
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    max_header_bytes: int = Field(default=16_384, gt=0, description="request line and headers; more: 431")
    max_headers: int = Field(default=100, gt=0, description="header lines in one request; more: 431")
    header_timeout_s: float = Field(default=10, gt=0, description="to send the request line and headers; then 408")
    body_timeout_s: float = Field(default=30, gt=0, description="to send the whole body once headers are in; then 408")
    request_timeout_s: float = Field(default=900, gt=0, description="for a whole request, answer included; then 408")
    upstream_timeout_s: float = Field(default=600, gt=0)
    health_interval_s: float = Field(default=2.0, gt=0)
    drain_timeout_s: float = Field(default=30, ge=0, description="how long shutdown waits for streams in flight")
    vllm_python: Path | None = Field(default=None, description="Python with vLLM; null: .venv-vllm, then this one")
    profiles: Path = Path("profiles")
    models: dict[str, ServedModel] = Field(min_length=1)
    store: LimitsStore | None = Field(default=None, description="shared limits store; null: this process's memory")

_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(value: str) -> int:
    """Seconds in a Slurm time string (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`)."""
    m = _SLURM_TIME.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a Slurm time (e.g. 30, 04:00:00, 5-00:00:00)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is None:  # MM, MM:SS, HH:MM:SS
        h, mi, s = (0, a, b or 0) if c is None else (a, b, c)
    else:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, mi, s = a, b or 0, c or 0
    return (days or 0) * 86400 + h * 3600 + mi * 60 + s


class PartitionProfile(Strict):
    """One partition's node shape and limits, as the site documents them."""

    cpus_per_node: int = Field(gt=0)
    mem_gb_per_node: float = Field(gt=0, description="memory a job may use on one node")
    gpus_per_node: int = Field(default=0, ge=0)
    gpu_type: str | None = None
    max_time: str = Field(description="partition time limit, Slurm format, e.g. 5-00:00:00")

    @model_validator(mode="after")
    def _time(self) -> PartitionProfile:
        slurm_time_seconds(self.max_time)
        return self


class DataJobProfile(Strict):
    """Resources of each task of a corpus-pipeline array job."""

    partition: str
    cpus_per_task: int = Field(default=1, gt=0)
    mem_gb_per_cpu: float = Field(default=2, gt=0)
    time: str = "04:00:00"
    max_array_size: int = Field(default=1001, gt=0, description="the site's MaxArraySize")


class TrainJobProfile(Strict):
    """Defaults of a training job: one task per GPU (or per process on CPU nodes)."""

    partition: str
    time: str = "01:00:00"
    tasks_per_node: int | None = Field(default=None, gt=0, description="null: the partition's GPUs per node")
    cpus_per_task: int | None = Field(default=None, gt=0, description="null: the node's CPUs shared by its tasks")
    grace_s: int = Field(default=300, ge=0, description=(
        "SIGUSR1 this long before the time limit: checkpoint and requeue; 0: no warning signal"))
    max_restarts: int = Field(default=5, ge=0, description="requeues after a signal before the job gives up")


class RayJobProfile(Strict):
    """Defaults of a Ray job (evaluation sweeps): a head on the first node, workers on the rest."""

    partition: str
    time: str = "04:00:00"
    tasks_per_node: int = Field(default=1, gt=0, description="Ray nodes per Slurm node (more than one: tests)")
    cpus_per_task: int | None = Field(default=None, gt=0, description="null: the node's CPUs shared by its tasks")


class ClusterProfile(Strict):
    """`slurm/clusters/*.yaml`: what a site's Slurm offers and how a job sets up its environment."""

    name: str
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    partitions: dict[str, PartitionProfile] = Field(min_length=1)
    setup: list[str] = Field(default_factory=list, description=(
        "shell lines run at the start of every job (module loads, venv activation); "
        "empty: activate the Python environment gptnl was submitted from"))
    scratch: str | None = Field(default=None, description="where runs, logs and checkpoints go on the cluster")
    env: dict[str, str] = Field(default_factory=dict, description=(
        "variables exported in training and Ray jobs, e.g. NCCL_SOCKET_IFNAME for a site's network"))
    data: DataJobProfile
    train: TrainJobProfile | None = None
    ray: RayJobProfile | None = None

    @model_validator(mode="after")
    def _data_fits(self) -> ClusterProfile:
        for name in ("train", "ray"):
            job = getattr(self, name)
            if job is not None and job.partition not in self.partitions:
                raise ValueError(f"{name}.partition {job.partition!r} is not among partitions "
                                 f"({', '.join(self.partitions)})")
        part = self.partitions.get(self.data.partition)
        if part is None:
            raise ValueError(f"data.partition {self.data.partition!r} is not among partitions "
                             f"({', '.join(self.partitions)})")
        if self.data.cpus_per_task > part.cpus_per_node:
            raise ValueError(f"data.cpus_per_task {self.data.cpus_per_task} is more than a {self.data.partition} "
                             f"node has ({part.cpus_per_node})")
        if self.data.cpus_per_task * self.data.mem_gb_per_cpu > part.mem_gb_per_node:
            raise ValueError(f"data: {self.data.cpus_per_task} CPUs x {self.data.mem_gb_per_cpu} GB is more memory "
                             f"than a {self.data.partition} node has ({part.mem_gb_per_node} GB)")
        if slurm_time_seconds(self.data.time) > slurm_time_seconds(part.max_time):
            raise ValueError(f"data.time {self.data.time} is above the {self.data.partition} limit {part.max_time}")
        return self


C = TypeVar("C", bound=BaseModel)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or a ConfigError that names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`--set section.key=value` on a config's raw mapping, before validation (so a bad key or value
    gets the same error as in the file). The value is read as YAML: `8`, `1e-4`, `true`, `null`,
    `[a, b]`; a dotted key creates the sections it names."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. optim.lr=3e-4)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        if isinstance(value, str) and _NUMBER.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _describe(exc: ValidationError, cls: type[BaseModel]) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(cls, err["loc"][:-1])
            msg = f"unknown field; allowed: {', '.join(allowed)}" if allowed else "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{field}: {msg}")
    return "; ".join(parts)


def _allowed_fields(cls: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        info = cls.model_fields.get(str(part)) if isinstance(part, str) else None
        ann = getattr(info, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cls = ann
    return list(cls.model_fields)


def validate(cls: type[C], data: dict[str, Any], source: str) -> C:
    """`cls(**data)`, or a ConfigError naming `source`, each bad field and what it allows."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, cls)}") from None


def load_model_config(path: Path) -> ModelConfig:
    return validate(ModelConfig, read_yaml(path), str(path))


def _source(path: Path, overrides: Sequence[str]) -> str:
    return f"{path} (with --set {', '.join(overrides)})" if overrides else str(path)


def load_train_config(path: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """A training config; a string `model:` is read as a model YAML relative to this file (so that
    `--set model.n_layers=4` reaches into it)."""
    path = Path(path)
    data = read_yaml(path)
    model = data.get("model")
    if isinstance(model, str):
        model_path = (path.parent / model).resolve()
        if not model_path.is_file():
            raise ConfigError(f"{path}: model: file {model} not found (looked at {model_path})")
        data = {**data, "model": read_yaml(model_path)}
    cfg = validate(TrainConfig, apply_overrides(data, overrides), _source(path, overrides))
    here = path.resolve().parent
    if cfg.init_from is not None:
        cfg = cfg.model_copy(update={"init_from": (here / cfg.init_from).resolve()})
    if cfg.data.mixture is not None:
        sources = [s.model_copy(update={"shards": (here / s.shards).resolve()}) for s in cfg.data.mixture.sources]
        mixture = cfg.data.mixture.model_copy(update={"sources": sources})
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"mixture": mixture})})
    return cfg


def load_licence_policy(path: Path) -> LicencePolicy:
    return validate(LicencePolicy, read_yaml(path), str(path))


def load_sources(path: Path) -> SourcesFile:
    return validate(SourcesFile, read_yaml(path), str(path))


def load_recipe(path: Path) -> RecipeConfig:
    """A recipe, with its relative paths resolved against the recipe's folder."""
    path = Path(path)
    recipe = validate(RecipeConfig, read_yaml(path), str(path))
    base = path.resolve().parent
    resolved = {k: (base / v).resolve() for k in ("sources", "licences", "blocklist")
                if (v := getattr(recipe, k)) is not None}
    if recipe.decontamination.tasks is not None:
        resolved["decontamination"] = recipe.decontamination.model_copy(
            update={"tasks": (base / recipe.decontamination.tasks).resolve()})
    if recipe.pii.ner is not None:
        resolved["pii"] = recipe.pii.model_copy(update={
            "ner": recipe.pii.ner.model_copy(update={"path": (base / recipe.pii.ner.path).resolve()})})
    return recipe.model_copy(update=resolved)


def load_cluster(path: Path) -> ClusterProfile:
    return validate(ClusterProfile, read_yaml(path), str(path))


def load_finetune_config(path: Path, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """A fine-tuning config, with the data gates' paths resolved against the config's folder."""
    path = Path(path)
    cfg = validate(FinetuneConfig, apply_overrides(read_yaml(path), overrides), _source(path, overrides))
    base = path.resolve().parent
    dec = cfg.data.decontamination
    data = cfg.data.model_copy(update={
        "licences": (base / cfg.data.licences).resolve(),
        "decontamination": dec.model_copy(update={"tasks": (base / dec.tasks).resolve() if dec.tasks else None}),
    })
    return cfg.model_copy(update={"data": data})


def load_gateway_config(path: Path, check_models: bool = True) -> GatewayConfig:
    """A gateway config with its paths resolved against the file's folder; each model's profile and
    folder are checked unless only the key store is wanted."""
    path = Path(path)
    cfg = validate(GatewayConfig, read_yaml(path), str(path))
    base = path.resolve().parent

    def at(p: Path | None) -> Path | None:
        return None if p is None else (base / p).resolve()

    models = {name: m.model_copy(update={"path": at(m.path)}) for name, m in cfg.models.items()}
    # the interpreter keeps its venv path: resolving the symlink would leave the venv
    python = None if cfg.vllm_python is None else Path(os.path.abspath(base / cfg.vllm_python))
    cfg = cfg.model_copy(update={"keys": at(cfg.keys), "audit": at(cfg.audit), "logs": at(cfg.logs),
                                 "vllm_python": python, "profiles": at(cfg.profiles), "models": models})
    for name, m in models.items() if check_models else ():
        if m.replicas and not (cfg.profiles / f"{m.profile}.yaml").is_file():
            known = sorted(p.stem for p in cfg.profiles.glob("*.yaml"))
            raise ConfigError(f"{path}: models.{name}.profile: no profile {m.profile!r} in {cfg.profiles} "
                              f"(known: {', '.join(known) or 'none'})")
        if m.replicas and not (m.path / "config.json").is_file():
            raise ConfigError(f"{path}: models.{name}.path: {m.path} is not an HF model folder (no config.json)")
    return cfg


def load_vllm_profile(path: Path) -> VllmProfile:
    return validate(VllmProfile, read_yaml(path), str(path))
