"""What every config shares: strict models, the path type, the YAML reader, `--set` overrides and
the validator whose errors name the file, the field and what it allows."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from gptnl.errors import ConfigError


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt `gradient_clip` must not silently fall back to a default.
    Defaults are validated like given values (a default `ConfigPath` is resolved too), and so are
    default sections, which are model instances."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, revalidate_instances="always")


def _from_config_file(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("config_dir")
    return value if base is None else (Path(base) / value).resolve()


ConfigPath = Annotated[Path, AfterValidator(_from_config_file)]
"""A path in a config file: relative to the YAML file that names it, whether it was written there,
given with `--set`, or is the field's default; absolute once loaded. Built without a file
(`Model(...)` in code), it stays as given."""


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
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")  # our validators' own sentences
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


def validate(cls: type[C], data: dict[str, Any], source: str, config_dir: Path | None = None) -> C:
    """`cls(**data)`, or a ConfigError naming `source`, each bad field and what it allows; its
    `ConfigPath`s are resolved against `config_dir` (the YAML file's folder)."""
    try:
        return cls.model_validate(data, context={"config_dir": Path(config_dir).resolve() if config_dir else None})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, cls)}") from None


def source_label(path: Path, overrides: Sequence[str]) -> str:
    return f"{path} (with --set {', '.join(overrides)})" if overrides else str(path)
