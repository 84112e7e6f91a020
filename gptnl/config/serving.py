"""The gateway, its served models and their vLLM profiles."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from gptnl.config.base import ConfigPath, Strict, read_yaml, validate
from gptnl.errors import ConfigError


class VllmProfile(Strict):
    """`serving/profiles/*.yaml`: how vLLM is started on a kind of machine."""

    args: list[str] = Field(default_factory=list, description="extra api_server arguments (dtype, eager, TP size)")
    env: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: float = Field(default=600, gt=0)


class ServedModel(Strict):
    path: ConfigPath | None = Field(default=None, description="HF model folder; needed when the gateway starts vLLM")
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
    keys: ConfigPath = Path("keys.json")
    audit: ConfigPath = Path("audit.jsonl")
    audit_fsync: bool = False
    logs: ConfigPath = Path("logs")
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
    profiles: ConfigPath = Path("profiles")
    models: dict[str, ServedModel] = Field(min_length=1)
    store: LimitsStore | None = Field(default=None, description="shared limits store; null: this process's memory")

def load_gateway_config(path: Path, check_models: bool = True) -> GatewayConfig:
    """A gateway config with its paths resolved against the file's folder; each model's profile and
    folder are checked unless only the key store is wanted."""
    path = Path(path)
    cfg = validate(GatewayConfig, read_yaml(path), str(path), path.parent)
    # the interpreter keeps its venv path (not a ConfigPath): resolving the symlink would leave the venv
    if cfg.vllm_python is not None:
        cfg = cfg.model_copy(update={"vllm_python": Path(os.path.abspath(path.resolve().parent / cfg.vllm_python))})
    for name, m in cfg.models.items() if check_models else ():
        if m.replicas and not (cfg.profiles / f"{m.profile}.yaml").is_file():
            known = sorted(p.stem for p in cfg.profiles.glob("*.yaml"))
            raise ConfigError(f"{path}: models.{name}.profile: no profile {m.profile!r} in {cfg.profiles} "
                              f"(known: {', '.join(known) or 'none'})")
        if m.replicas and not (m.path / "config.json").is_file():
            raise ConfigError(f"{path}: models.{name}.path: {m.path} is not an HF model folder (no config.json)")
    return cfg


def load_vllm_profile(path: Path) -> VllmProfile:
    return validate(VllmProfile, read_yaml(path), str(path))
