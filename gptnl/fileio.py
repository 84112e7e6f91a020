"""Atomic writes and the `manifest.json` every stage leaves in its output dir.

A reader never sees half a file: everything that matters is written to a temp file in the same
folder, flushed, fsynced and renamed over the target.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import gptnl
from gptnl.errors import GptnlError

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


def write_manifest(out: Path, *, stage: str, consumed: dict, produced: dict, config: dict) -> dict:
    """Write `out/manifest.json`: what a stage read (paths, checksums), made, and with which settings."""
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": code_version(),
        "consumed": consumed,
        "produced": produced,
        "config": config,
    }
    atomic_write_json(Path(out) / "manifest.json", manifest)
    return manifest


def read_manifest(path: Path) -> dict:
    file = Path(path) / "manifest.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptnlError(f"{path}: no manifest.json (was this dir written by gptnl?)") from None
    except json.JSONDecodeError as exc:
        raise GptnlError(f"{file}: corrupt manifest ({exc.msg})") from None
