"""Atomic writes, JSON Lines, and the `manifest.json` every stage leaves in its output dir.

A reader never sees half a file: everything that matters is written to a temp file in the same
folder, flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gptnl

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any other file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def iter_jsonl(path: Path) -> Iterator[Any]:
    """The records of a JSON Lines file (gzip-compressed when it ends in .gz), blank lines skipped."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_jsonl(path: Path) -> list[Any]:
    return list(iter_jsonl(path))


def jsonl_text(rows: Iterable[Any]) -> str:
    """Records as JSON Lines, non-ASCII kept as is."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@contextmanager
def jsonl_writer(path: Path) -> Iterator[Callable[[Any], None]]:
    """`write(record)` for a JSON Lines file written atomically and streamed (gzip-compressed when the
    name ends in .gz, with no name or time in the header, so the same records give the same bytes).
    The file appears only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) \
                if path.suffix == ".gz" else None
            fh = io.TextIOWrapper(gz or raw, encoding="utf-8")
            yield lambda record: fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            fh.detach()  # the wrapper lets go of the stream without closing it
            if gz is not None:
                gz.close()  # writes the gzip trailer; `raw` stays open
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Write JSON Lines atomically (gzip-compressed, reproducibly, when the name ends in .gz)."""
    with jsonl_writer(path) as write:
        for row in rows:
            write(row)


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap a fully written folder into place; a reader sees the old folder or the new, never half."""
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(model_dir: Path) -> str:
    """A model folder's identity: the first 16 hex digits of each safetensors file's sha256, in
    name order ("" when there are none). Evaluation records, model cards and run lineage all name
    weights by it."""
    return ",".join(sha256_file(w)[:16] for w in sorted(Path(model_dir).glob("*.safetensors")))


def code_version() -> str:
    """gptnl's version, plus the git commit when run from a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return gptnl.__version__
    return f"{gptnl.__version__}+g{commit}"

