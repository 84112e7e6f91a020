"""Typed configs for every YAML a user writes, one module per area, and the one loader that validates
them (`base`).

Defaults live in these models and nowhere else. Errors name the file, the field and what is allowed, so a
typo in a training config fails in the first second instead of after the DeepSpeed start-up.
"""


from gptnl.config.base import C, Strict, apply_overrides, read_yaml, validate  # noqa: F401
from gptnl.config.cluster import (  # noqa: F401
    ClusterProfile,
    DataJobProfile,
    PartitionProfile,
    RayJobProfile,
    TrainJobProfile,
    load_cluster,
    slurm_time_seconds,
)
from gptnl.config.data import (  # noqa: F401
    CorpusPiiStep,
    DecontaminationStep,
    LanguageStep,
    LicencePolicy,
    LicenceTerms,
    NearDedupStep,
    NerBackend,
    PiiStep,
    PublicDomainCategory,
    QualityStep,
    ReaderStep,
    RecipeConfig,
    SourceConfig,
    SourcesFile,
    load_licence_policy,
    load_recipe,
    load_sources,
)
from gptnl.config.finetune import FinetuneConfig, LoraSettings, SftBatch, SftData, load_finetune_config  # noqa: F401
from gptnl.config.model import ModelConfig, RopeScaling, load_model_config  # noqa: F401
from gptnl.config.pack import PACK, TOKENIZER, PackSettings, TokenizerSettings  # noqa: F401
from gptnl.config.serving import (  # noqa: F401
    GatewayConfig,
    LimitsStore,
    ServedModel,
    VllmProfile,
    load_gateway_config,
    load_vllm_profile,
)
from gptnl.config.train import (  # noqa: F401
    BatchConfig,
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    MetricsConfig,
    MixtureConfig,
    MixtureSource,
    MixtureStage,
    OptimConfig,
    TrainConfig,
    load_train_config,
)
