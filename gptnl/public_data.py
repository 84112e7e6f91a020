"""Public benchmark files on this machine: where a set's folder is, which of its files a task reads,
and their raw rows (JSONL, JSON, Parquet, CSV) as the publisher wrote them.

Shared by the evaluation (which maps rows onto items) and the corpus pipeline (which refuses
training documents that overlap any public set present here), so it sits below both.

A set `<task>` lives in `$GPTNL_PUBLIC_DATA/<task>/` when that variable is set, else where
`gptnl eval fetch` last put it (recorded in the registry, `$GPTNL_PUBLIC_REGISTRY`, default
`~/.cache/gptnl/public-data.json`).
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptnl.errors import GptnlError

DATA_ENV = "GPTNL_PUBLIC_DATA"
REGISTRY_ENV = "GPTNL_PUBLIC_REGISTRY"
READABLE = (".jsonl", ".json", ".parquet", ".csv")


class PublicDataError(GptnlError):
    """A public set that is not here, or whose files are not in the publisher's layout."""


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or Path.home() / ".cache" / "gptnl" / "public-data.json")


def registry() -> dict[str, str]:
    """{task: folder} as recorded by `gptnl eval fetch`; an unreadable registry reads as empty."""
    try:
        data = json.loads(registry_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def record(task: str, folder: Path) -> None:
    """Remember where a set was fetched to (atomically: a reader never sees half a registry)."""
    from gptnl.fileio import atomic_write_text

    entries = registry()
    entries[task] = str(Path(folder).resolve())
    atomic_write_text(registry_path(), json.dumps(entries, indent=2, sort_keys=True) + "\n")


def candidates(task: str) -> list[Path]:
    """Where the set's folder may be, in the order they are tried."""
    out = []
    if os.environ.get(DATA_ENV):
        out.append(Path(os.environ[DATA_ENV]) / task)
    if task in registry():
        out.append(Path(registry()[task]))
    return out


def _alternatives(spec: list) -> list[list[str]]:
    return [[a] if isinstance(a, str) else list(a) for a in spec]


def describe(spec: list) -> str:
    """The layouts a split may come in, for messages: `a.jsonl`, or `b/*.parquet`."""
    return " or ".join(" + ".join(f"`{g}`" for g in alt) for alt in _alternatives(spec))


def match(folder: Path, spec: list) -> list[Path] | None:
    """The files of the first layout whose globs all match under `folder`; None when none does."""
    for alt in _alternatives(spec):
        found: list[Path] = []
        for pattern in alt:
            hits = sorted(Path(p) for p in glob.glob(str(Path(folder) / pattern), recursive=True)
                          if Path(p).is_file())
            if not hits:
                break
            found += hits
        else:
            return found
    return None


def locate(task: str, files: dict[str, list], split: str) -> tuple[Path, list[Path]]:
    """(the set's folder, the files of `split`), or an error saying where it looked and what to place."""
    tried = candidates(task)
    for folder in tried:
        hits = match(folder, files[split])
        if hits:
            return folder, hits
    where = ", ".join(str(f) for f in tried) or f"nowhere (set {DATA_ENV}, or fetch it)"
    raise PublicDataError(f"{task}: the public files are not here: looked in {where} for "
                          f"{describe(files[split])}; get them with `gptnl eval fetch {task} --to DIR` "
                          f"(offline it says which files to place where)")


def present(task: str, files: dict[str, list], split: str) -> list[Path] | None:
    try:
        return locate(task, files, split)[1]
    except PublicDataError:
        return None


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield f"{path}:{n}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PublicDataError(f"{path}:{n}: not JSON ({exc.msg})") from None


def _json(path: Path) -> Iterator[tuple[str, Any]]:
    """A JSON array of rows, or JSON Lines under a .json name (as some Hub repos ship them)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        yield from _jsonl(path)
        return
    rows = data if isinstance(data, list) else data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise PublicDataError(f"{path}: expected a JSON array of rows (or JSON Lines)")
    for i, row in enumerate(rows):
        yield f"{path}[{i}]", row


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise PublicDataError(f"{path}: not a Parquet file ({exc})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}[row {i}]", row


def _csv(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            yield f"{path}:{n}", row


def rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row of a publisher's file; `where` names the file and line or row."""
    reader = {".jsonl": _jsonl, ".json": _json, ".parquet": _parquet, ".csv": _csv}.get(Path(path).suffix)
    if reader is None:
        raise PublicDataError(f"{path}: cannot read {Path(path).suffix or 'a file without extension'} "
                              f"(readable: {', '.join(READABLE)})")
    for where, row in reader(Path(path)):
        if not isinstance(row, dict):
            raise PublicDataError(f"{where}: a row must be an object with named fields")
        yield where, row
