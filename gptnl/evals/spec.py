"""The YAML files of evaluation: a task (`evals/tasks/<name>/task.yaml`), a suite of tasks
(`evals/suites/*.yaml`) and a sweep of models x suites x settings (`evals/sweeps/*.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gptnl.config import Strict, read_yaml, validate

VALUES = ("taalvaardigheid", "kennis", "begrijpelijke-taal", "gelijke-behandeling", "privacy", "veiligheid",
          "waarheidsgetrouwheid", "duurzaamheid")


def _registered(kind: str) -> dict:
    """The registry of task types, scorers or metrics (imported here, late: they import this module)."""
    if kind == "type":
        from gptnl.evals.runner import TASK_TYPES

        return TASK_TYPES
    if kind == "scorer":
        from gptnl.evals.scorers import SCORERS

        return SCORERS
    from gptnl.evals.metrics import METRICS

    return METRICS


def _allowed(kind: str, names: list[str]) -> None:
    known = _registered(kind)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{kind}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")


class Expand(Strict):
    """Every item once per name of every group: the prompts differ only in the name."""

    placeholder: str = Field(description="the {field} in the prompt the name goes into")
    names: str = Field(description="JSON file next to task.yaml: {group: [names]}")


class B1(Strict):
    """When an answer counts as B1: all three limits met (proxies; see docs/evals.md)."""

    min_flesch_douma: float = 60.0
    max_sentence_words: float = 15.0
    min_frequent_share: float = 0.8


PUBLIC_LAYOUTS = ("belebele", "global-mmlu", "include", "mbbq", "squad", "copa", "okapi-arc", "okapi-hellaswag",
                  "okapi-mmlu", "okapi-truthfulqa-mc1",
                  "okapi-truthfulqa-mc2", "scala", "dutch-cola", "dbrd")


class PublicData(Strict):
    """A public set read from its publisher's files as distributed, in a local folder (gptnl/evals/public.py)."""

    repo: str | None = Field(default=None, description="Hugging Face dataset repo; none: the files are placed by hand")
    url: str = Field(description="where the publisher distributes the set")
    revision: str = "main"
    layout: Literal[PUBLIC_LAYOUTS] = Field(description="the publisher's schema")  # type: ignore[valid-type]
    files: dict[str, list[str | list[str]]] = Field(
        description="split -> the layouts the publisher ships (jsonl, parquet, csv), each a glob or a list of globs "
                    "relative to the set's folder; the first whose globs all match is read")
    split: str = Field(default="test", description="the split that is evaluated")
    gated: bool = Field(default=False, description="the Hub asks for a token and accepted terms")
    may_train: bool = Field(description="whether the licence allows training on it (else: evaluate only)")

    @model_validator(mode="after")
    def _split_listed(self) -> PublicData:
        if self.split not in self.files:
            raise ValueError(f"split {self.split!r} is not among files {sorted(self.files)}")
        return self


class FewShot(Strict):
    """Solved examples before each item. From a `split` (a file named in `splits`): the same n
    examples for every item, drawn once with `seed`, as EuroEval draws them from the train split.
    Without a split: n other items of the task itself, fixed per item and seed."""

    n: int = Field(default=0, ge=0)
    split: str | None = Field(default=None, description="a key of `splits` (or of `public.files`), e.g. train")
    seed: int = 0


class Rolling(Strict):
    """Perplexity over documents longer than the model's context, as lm-eval's loglikelihood_rolling:
    windows of `window` tokens (default: the model's context), each scoring `stride` new tokens
    (default: the window: disjoint windows) with the tokens before them as context."""

    window: int | None = Field(default=None, ge=2)
    stride: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> Rolling:
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride {self.stride} is over the window of {self.window} tokens")
        return self


class TaskSpec(Strict):
    name: str
    value: Literal[VALUES]  # type: ignore[valid-type]
    description: str
    type: str = Field(description="a registered task type (gptnl eval list shows them)")
    version: str = "1"
    items: str = Field(default="items.jsonl", description="items (JSONL), or a text file for perplexity")
    format: Literal["gptnl", "lm-eval", "euroeval", "mbbq"] = "gptnl"
    prompt: str = Field(default="{prompt}", description="Python format string over the item's fields")
    choices: str | list[str] | None = Field(default=None, description="item field with the choices, or the choices")
    answer: str = Field(default="answer", description="item field with the answer index (or target text)")
    target_delimiter: str = " "
    expand: Expand | None = None
    few_shot: FewShot = Field(default_factory=FewShot, description="n, or {n, split, seed}")
    splits: dict[str, str] = Field(default_factory=dict, description="other splits' files, e.g. {train: train.jsonl}")
    rolling: Rolling = Field(default_factory=Rolling, description="perplexity: window and stride in tokens")
    chat: bool = Field(default=False, description="generate through /v1/chat/completions")
    max_tokens: int = Field(default=128, gt=0)
    candidates: int = Field(default=100, ge=2, le=100_000,
                            description="canary: the secret is ranked among itself and this many - 1 decoys")
    scorer: str = Field(default="none", description="a registered scorer")
    pattern: str | None = Field(default=None, description="for scorer: regex")
    b1: B1 = Field(default_factory=B1)
    min_chrf: float = Field(default=30.0, ge=0, le=100,
                            description="b1_share_faithful: chrF against the reference an answer needs to count")
    concurrency: int | None = Field(default=None, gt=0, description="requests at once (1 for timing tasks)")
    cache: bool = Field(default=True, description="false: always ask the model (timings must be fresh)")
    metrics: list[str] = Field(min_length=1)
    primary: str
    licence: str = "CC0-1.0"
    public: PublicData | None = Field(default=None, description="a public set: its files instead of `items`")

    @field_validator("few_shot", mode="before")
    @classmethod
    def _few_shot_count(cls, v):
        return {"n": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        _allowed("type", [self.type])
        _allowed("scorer", [self.scorer])
        _allowed("metric", self.metrics)
        splits = set(self.splits) | set(self.public.files if self.public else ())
        if self.few_shot.split is not None and self.few_shot.split not in splits:
            raise ValueError(f"few_shot.split {self.few_shot.split!r} is not among the task's splits {sorted(splits)}")
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
    tokenizer: str | None = Field(default=None, description="the model's tokenizer folder (an endpoint's model): "
                                  "perplexity over long documents in windows of tokens")

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
