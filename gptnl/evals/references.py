"""Published reference scores the user supplies (a CSV: model, task, metric, value, source), set
beside our results in the report. Nothing is fetched: the user names where each number comes from."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gptnl.evals.tasks import EvalError

COLUMNS = ["model", "task", "metric", "value", "source"]


class ReferenceScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    task: str
    metric: str
    value: float
    source: str


def read_references(path: Path) -> list[ReferenceScore]:
    """Every row of the CSV; a wrong header, an empty field or a value that is not a number is
    refused naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"--references {path}: no such file")
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        if header != COLUMNS:
            raise EvalError(f"{path}:1: the header must be {','.join(COLUMNS)} (found {','.join(header) or 'none'})")
        out = []
        for n, row in enumerate(reader, 2):
            fields = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if None in row or any(not fields.get(c) for c in COLUMNS):
                raise EvalError(f"{path}:{n}: every row needs {', '.join(COLUMNS)} (and no more)")
            try:
                value = float(fields["value"])
            except ValueError:
                raise EvalError(f"{path}:{n}: value {fields['value']!r} is not a number") from None
            if not math.isfinite(value):
                raise EvalError(f"{path}:{n}: value {fields['value']!r} is not a finite number")
            out.append(ReferenceScore(**{**fields, "value": value}))
    return out
