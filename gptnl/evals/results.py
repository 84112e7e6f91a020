"""The result of one cell (model x task x settings): one JSON record, appended to `results.jsonl`
in a single write, so that a killed run never leaves half a line and a rerun can skip what is done.
The schema is `ResultRecord`; docs/evals-result.schema.json is generated from it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gptnl.fileio import atomic_write_bytes

SCHEMA = "gptnl.eval.result/1"


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricValue(_Rec):
    value: float | None = Field(description="the metric on all rows; null where it is undefined")
    low: float | None = Field(description="2.5th percentile of the bootstrap")
    high: float | None = Field(description="97.5th percentile of the bootstrap")
    n: int = Field(description="rows (scored items)")
    clusters: int = Field(description="independent units resampled (items, templates, scenarios)")


class ModelInfo(_Rec):
    name: str
    endpoint: str
    model_id: str
    fingerprint: str = Field(description="sha256 of a local export's weights; empty for a remote endpoint")


class TaskInfo(_Rec):
    name: str
    value: str
    type: str
    version: str
    sha256: str = Field(description="of task.yaml and every file it reads")
    items: int
    unmapped: int = Field(default=0, description="items a public reader could not fully map (MBBQ rows whose "
                                                 "stereotyped answer cannot be told): scored for accuracy, not bias")


class SuiteInfo(_Rec):
    name: str
    sha256: str


class Timings(_Rec):
    started: str
    wall_s: float
    requests: int
    cached: int


class ResultRecord(_Rec):
    schema_: Literal["gptnl.eval.result/1"] = Field(alias="schema")
    cell: str
    model: ModelInfo
    task: TaskInfo
    suite: SuiteInfo | None
    settings: dict[str, Any]
    metrics: dict[str, MetricValue]
    primary: str
    higher_is_better: dict[str, bool | None]
    timings: Timings
    gptnl_version: str


class FailedCell(_Rec):
    """A cell that raised instead of finishing: the other cells go on, a rerun tries it again."""

    schema_: Literal["gptnl.eval.failed/1"] = Field(default="gptnl.eval.failed/1", alias="schema")
    cell: str
    model: str
    task: str
    settings: str
    error: str = Field(description="what went wrong, in one line")
    at: str = Field(description="when (UTC, ISO 8601)")


def cell_id(model: ModelInfo, task_name: str, task_sha: str, settings: dict) -> str:
    raw = json.dumps([model.name, model.endpoint, model.model_id, model.fingerprint, task_name, task_sha, settings],
                     sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def append(results: Path, record: dict) -> None:
    """One line, one write(2) on an O_APPEND file."""
    ResultRecord.model_validate(record)
    results.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(results: Path) -> list[dict]:
    """Every valid record; a line cut by a machine crash is skipped (its cell is simply redone)."""
    if not Path(results).is_file():
        return []
    out = []
    for line in Path(results).read_text(encoding="utf-8").splitlines():
        try:
            out.append(ResultRecord.model_validate_json(line).model_dump(by_alias=True))
        except ValueError:
            continue
    return out


def append_failure(path: Path, failure: FailedCell) -> None:
    """One line per failed attempt, in one write(2), next to results.jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (failure.model_dump_json(by_alias=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def failures(results_dir: Path) -> list[FailedCell]:
    """The cells that failed and have not finished since (the same model, task and settings, started
    after the failure; a task that did not load gets another cell id once it does): the last failure of each."""
    path = Path(results_dir) / "failed.jsonl"
    if not path.is_file():
        return []
    finished: dict[tuple[str, str, str], str] = {}
    for r in read(Path(results_dir) / "results.jsonl"):
        key = (r["model"]["name"], r["task"]["name"], r["settings"].get("name", ""))
        finished[key] = max(finished.get(key, ""), r["timings"]["started"])
    last: dict[tuple[str, str, str], FailedCell] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            f = FailedCell.model_validate_json(line)
        except ValueError:
            continue
        last[(f.model, f.task, f.settings)] = f
    return [f for key, f in last.items() if finished.get(key, "") < f.at]


def write_rows(results_dir: Path, cell: str, rows: list[dict]) -> Path:
    """The scored items of a cell, for audit: rows/<cell>.jsonl.gz."""
    path = Path(results_dir) / "rows" / f"{cell}.jsonl.gz"
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    atomic_write_bytes(path, gzip.compress(text.encode(), mtime=0))
    return path


def json_schema() -> dict:
    return ResultRecord.model_json_schema(by_alias=True)
