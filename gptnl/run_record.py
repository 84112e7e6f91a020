"""The one guard on reruns: a run folder belongs to the settings it was started with.

Training, fine-tuning and the corpus build all resume what a folder holds, so a rerun with other
settings would silently mix old and new work. The first start records the settings; a rerun is
checked against the record, and a difference stops it with one line that says what differs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from gptnl.errors import ConfigError
from gptnl.fileio import atomic_write_json

Refusal = Callable[[dict], str | None]  # the saved record -> what differs (a whole sentence), or None


def differs_in(current: dict, message: str) -> Refusal:
    """A refusal when any key of `current` has another value in the saved record."""
    return lambda saved: message if {k: saved.get(k) for k in current} != current else None


def same_run_or_refuse(path: Path, current: dict, refusals: Refusal | list[Refusal]) -> dict | None:
    """First start (no `path`): write `current`, return None. Rerun: raise ConfigError with the
    first refusal that names a difference; otherwise return the saved record (unchanged on disk)."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, current)
        return None
    saved = json.loads(path.read_text())
    for refusal in refusals if isinstance(refusals, list) else [refusals]:
        why = refusal(saved)
        if why:
            raise ConfigError(why)
    return saved
