"""The YAML files of evaluation: a task (`evals/tasks/<name>/task.yaml`), a suite of tasks
(`evals/suites/*.yaml`) and a sweep of models x suites x settings (`evals/sweeps/*.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gptnl.config import Strict, read_yaml, validate

VALUES = ("taalvaardigheid", "kennis", "begrijpelijke-taal", "gelijke-behandeling", "privacy", "veiligheid",
          "waarheidsgetrouwheid", "duurzaamheid")
TASK_TYPES = ("multiple_choice", "generate", "pairs", "perplexity", "probe", "canary")
SCORERS = ("exact", "regex", "f1", "readability", "pii", "refusal", "none")


class Expand(Strict):
    """Every item once per name of every group: the prompts differ only in the name."""

    placeholder: str = Field(description="the {field} in the prompt the name goes into")
    names: str = Field(description="JSON file next to task.yaml: {group: [names]}")


class B1(Strict):
    """When an answer counts as B1: all three limits met (proxies; see docs/evals.md)."""

    min_flesch_douma: float = 60.0
    max_sentence_words: float = 15.0
    min_frequent_share: float = 0.8


class TaskSpec(Strict):
    name: str
    value: Literal[VALUES]  # type: ignore[valid-type]
    description: str
    type: Literal[TASK_TYPES]  # type: ignore[valid-type]
    version: str = "1"
    items: str = Field(default="items.jsonl", description="items (JSONL), or a text file for perplexity")
    format: Literal["gptnl", "lm-eval", "euroeval", "mbbq"] = "gptnl"
    prompt: str = Field(default="{prompt}", description="Python format string over the item's fields")
    choices: str | list[str] | None = Field(default=None, description="item field with the choices, or the choices")
    answer: str = Field(default="answer", description="item field with the answer index (or target text)")
    target_delimiter: str = " "
    expand: Expand | None = None
    few_shot: int = Field(default=0, ge=0)
    chat: bool = Field(default=False, description="generate through /v1/chat/completions")
    max_tokens: int = Field(default=128, gt=0)
    candidates: int = Field(default=100, ge=2, le=100_000,
                            description="canary: the secret is ranked among itself and this many - 1 decoys")
    scorer: Literal[SCORERS] = "none"  # type: ignore[valid-type]
    pattern: str | None = Field(default=None, description="for scorer: regex")
    b1: B1 = Field(default_factory=B1)
    concurrency: int | None = Field(default=None, gt=0, description="requests at once (1 for timing tasks)")
    cache: bool = Field(default=True, description="false: always ask the model (timings must be fresh)")
    metrics: list[str] = Field(min_length=1)
    primary: str
    licence: str = "CC0-1.0"

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        from gptnl.evals.metrics import METRICS

        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"metrics: unknown {unknown} (known: {', '.join(sorted(METRICS))})")
        if self.primary not in self.metrics:
            raise ValueError(f"primary {self.primary!r} is not among metrics {self.metrics}")
        if self.type == "multiple_choice" and self.choices is None:
            raise ValueError("choices: a multiple_choice task needs a field name or a list")
        if self.scorer == "regex" and not self.pattern:
            raise ValueError("pattern: scorer regex needs a pattern")
        return self


class SuiteSpec(Strict):
    name: str
    description: str = ""
    tasks: list[str] = Field(min_length=1, description="task names under the tasks dir")
    tasks_dir: str = Field(default="../tasks", description="relative to the suite file")


class ModelRef(Strict):
    """A model to evaluate: an OpenAI-compatible endpoint, or a local HF export served for the run."""

    endpoint: str | None = None
    path: str | None = None
    model_id: str | None = Field(default=None, description="the model name the endpoint knows (default: its only one)")
    api_key_env: str | None = Field(default=None, description="environment variable holding the API key")

    @model_validator(mode="after")
    def _one(self) -> ModelRef:
        if (self.endpoint is None) == (self.path is None):
            raise ValueError("give exactly one of endpoint (http://…/v1) and path (a local HF export)")
        return self


class Settings(Strict):
    """How the model is asked; part of a result's identity."""

    name: str = "default"
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int | None = Field(default=None, gt=0, description="overrides each task's")
    few_shot: int | None = Field(default=None, ge=0, description="overrides each task's")
    chat: bool | None = Field(default=None, description="overrides each task's")
    seed: int = 0
    limit: int | None = Field(default=None, gt=0, description="at most this many items per task (quick runs)")
    device_power_w: float = Field(default=350.0, gt=0, description="for energy estimates: the serving device's draw")


class SweepSpec(Strict):
    suite: str = Field(description="suite YAML, relative to the sweep file")
    models: dict[str, ModelRef] = Field(min_length=1)
    settings: list[Settings] = Field(default_factory=lambda: [Settings()], min_length=1)
    concurrency: int = Field(default=4, gt=0, description="requests at once per cell")
    retries: int = Field(default=2, ge=0, description="Ray retries of a cell whose worker died")

    @model_validator(mode="after")
    def _unique(self) -> SweepSpec:
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            raise ValueError(f"settings: names must be unique, got {names}")
        return self


def load_task_spec(path: Path) -> TaskSpec:
    spec = validate(TaskSpec, read_yaml(path), str(path))
    if spec.name != Path(path).parent.name:
        from gptnl.errors import ConfigError

        raise ConfigError(f"{path}: name {spec.name!r} must equal its folder's name {Path(path).parent.name!r}")
    return spec


def load_suite(path: Path) -> SuiteSpec:
    return validate(SuiteSpec, read_yaml(path), str(path))


def load_sweep(path: Path) -> SweepSpec:
    return validate(SweepSpec, read_yaml(path), str(path))
