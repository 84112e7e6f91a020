"""DeepSpeed checkpoints that are proven complete before they are trusted.

DeepSpeed writes `global_step{N}/` from every rank; a kill in the middle leaves a folder that
looks fine and fails to load (or, worse, loads). After all ranks have saved, rank 0 writes
`gptnl_complete.json` listing every file with its size (and sha256), then moves the `latest`
pointer atomically, then prunes old checkpoints. Resume takes the newest folder whose marker
checks out and says which it skipped and why.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from gptnl.errors import CheckpointError
from gptnl.fileio import atomic_write_json, atomic_write_text, sha256_file

MARKER = "gptnl_complete.json"
TAG_RE = re.compile(r"^global_step(\d+)$")


def tag_for(step: int) -> str:
    return f"global_step{step}"


@dataclass(frozen=True)
class CheckpointInfo:
    tag: str
    step: int
    path: Path
    meta: dict


def write_marker(run_dir: Path, tag: str, meta: dict, integrity: str) -> None:
    folder = Path(run_dir) / tag
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        entry = {"size": f.stat().st_size}
        if integrity == "sha256":
            entry["sha256"] = sha256_file(f)
        files[str(f.relative_to(folder))] = entry
    atomic_write_json(folder / MARKER, {**meta, "integrity": integrity, "files": files})


def set_latest(run_dir: Path, tag: str) -> None:
    atomic_write_text(Path(run_dir) / "latest", tag)


def problem(folder: Path) -> str | None:
    """Why the checkpoint in `folder` cannot be trusted, or None when it is complete and intact."""
    marker = folder / MARKER
    if not marker.is_file():
        return "no completion marker (the save was interrupted)"
    try:
        meta = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return "completion marker is corrupt"
    for name, entry in meta.get("files", {}).items():
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != entry["size"]:
            return f"{name} has {f.stat().st_size} bytes, expected {entry['size']}"
        if "sha256" in entry and sha256_file(f) != entry["sha256"]:
            return f"{name} does not match its checksum"
    if not meta.get("files"):
        return "completion marker lists no files"
    return None


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `global_step{N}` folder, newest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := TAG_RE.match(p.name))]
    return sorted(found, reverse=True)


def newest_complete(run_dir: Path) -> CheckpointInfo | None:
    """The newest intact checkpoint; a warning for each newer one that is skipped."""
    for step, folder in list_checkpoints(run_dir):
        why = problem(folder)
        if why is None:
            meta = json.loads((folder / MARKER).read_text())
            return CheckpointInfo(tag=folder.name, step=step, path=folder, meta=meta)
        warnings.warn(f"checkpoint {folder} skipped: {why}; trying an older one", stacklevel=2)
    return None


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints, and incomplete ones older than those."""
    keep, removed = 0, []
    for _step, folder in list_checkpoints(run_dir):
        if keep < keep_last and problem_fast(folder) is None:
            keep += 1
            continue
        if keep == 0:
            continue  # never delete anything newer than the newest complete checkpoint: it may be in progress
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def problem_fast(folder: Path) -> str | None:
    """Only the marker: pruning must not re-hash every checkpoint."""
    return None if (folder / MARKER).is_file() else "no completion marker"


def check_compatible(ckpt: CheckpointInfo, world_size: int, zero_stage: int, engine_dir: str = "") -> None:
    """Refuse a resume DeepSpeed would get wrong, naming the command that converts the checkpoint.
    `engine_dir`: the DeepSpeed folder inside the checkpoint (accelerate's `pytorch_model`), if any."""
    saved_world, saved_stage = ckpt.meta.get("world_size"), ckpt.meta.get("zero_stage")
    if saved_stage != zero_stage:
        raise CheckpointError(
            f"{ckpt.path} was written with ZeRO stage {saved_stage}; this run uses stage {zero_stage}. "
            f"Set zero_stage: {saved_stage} in the config to resume it."
        )
    if saved_world != world_size and zero_stage > 0:
        out = ckpt.path.with_name(ckpt.tag + "_universal")
        source, target = (ckpt.path / engine_dir, out / engine_dir) if engine_dir else (ckpt.path, out)
        procs = f"{saved_world} process{'es' if saved_world != 1 else ''}"
        raise CheckpointError(
            f"{ckpt.path} was written by {procs} with ZeRO-{zero_stage}; this run has "
            f"{world_size}, and ZeRO's optimizer partitions depend on that number. Convert it with "
            f"`python -m deepspeed.checkpoint.ds_to_universal --input_folder {source} "
            f"--output_folder {target} --inject_missing_state` and resume with `--universal`, "
            f"or run with {procs}."
        )
