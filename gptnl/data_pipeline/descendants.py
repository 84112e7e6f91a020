"""What was made from a corpus: token shards, training runs, exports and tuned models, found by
their manifests (files, not imports: the data stage never imports pack, train or finetune).

The chain is the one every stage records: a pack manifest names its `corpus`; a run (its
`manifest.json`, or `train_config.json` while it is still training) names its `shards`; an export
names its `run_dir` and `shards`; a tuned model names its `base`. Folders are searched under the
given roots (and the corpus's own parent folder), never inside documents, checkpoints or work dirs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

RUN_CONFIG = "train_config.json"  # what gptnl.train writes at a run's first start (train/loop.py)
SKIP = {"documents", "global_step", ".pipeline", "__pycache__", "node_modules", "tensorboard", "logs"}
MAX_DEPTH = 6


class Descendant(BaseModel):
    """One folder made (directly or not) from the corpus."""

    path: str
    stage: str  # pack | train | export | finetune
    created: str | None  # the manifest's UTC time; None for a run still training
    from_: str  # the folder it was made from
    finished: bool = True


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _resolved(value) -> str | None:
    return str(Path(value).resolve()) if isinstance(value, str) and value else None


def manifests(roots: list[Path]) -> dict[str, dict]:
    """{folder: manifest} of every folder under `roots` with a gptnl manifest (or a run's config).

    Read as plain JSON, not through `artefacts.read_manifest`: a takedown must trace weights made by
    any earlier gptnl, whose manifests need not match today's models; it needs only their links."""
    found: dict[str, dict] = {}
    for root in roots:
        root = Path(root).resolve()
        if not root.is_dir():
            continue
        base_depth = len(root.parts)
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs[:] = [d for d in dirs if d not in SKIP and not d.startswith(("global_step", "."))
                       and len(here.parts) - base_depth < MAX_DEPTH]
            if "manifest.json" in files and (m := _read(here / "manifest.json")) and "stage" in m:
                found[str(here)] = m
            elif RUN_CONFIG in files and (cfg := _read(here / RUN_CONFIG)):
                found[str(here)] = {"stage": "train", "created": None, "consumed": {"shards": cfg.get("shards")},
                                    "unfinished": True}
    return found


def _parent(m: dict) -> list[str]:
    """The folders a manifest says it was made from."""
    c = m.get("consumed") or {}
    keys = {"pack": ["corpus"], "train": ["shards"], "export": ["run_dir", "shards"], "finetune": ["base"]}
    return [p for k in keys.get(m.get("stage"), []) if (p := _resolved(c.get(k)))]


def descendants(corpus: Path, roots: list[Path]) -> list[Descendant]:
    """Every folder under `roots` (and beside the corpus) whose manifests trace back to `corpus`,
    in the order of the chain (shards, runs, exports, tuned models)."""
    corpus = str(Path(corpus).resolve())
    found = manifests([Path(corpus).parent, *roots])
    traced: dict[str, Descendant] = {}
    changed = True
    while changed:  # a fixed point: a tuned model of a tuned model of an export is found too
        changed = False
        for folder, m in found.items():
            if folder in traced or folder == corpus:
                continue
            origin = next((p for p in _parent(m) if p == corpus or p in traced), None)
            if origin is not None:
                traced[folder] = Descendant(path=folder, stage=m["stage"], created=m.get("created"), from_=origin,
                                            finished=not m.get("unfinished"))
                changed = True
    order = {"pack": 0, "train": 1, "export": 2, "finetune": 3}
    return sorted(traced.values(), key=lambda d: (order.get(d.stage, 9), d.path))
