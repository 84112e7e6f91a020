"""The files the code ships besides itself: task files and suites, report templates, word lists and
test sets, sbatch templates and cluster profiles, vLLM profiles, configs, the bundled sample corpus
and conversations.

Each area here (`configs`, `data_pipeline`, `serving`, `slurm`, `evals`) is a link to the top-level
folder of the same name that users edit in a clone, so there is one copy of every file; a built
wheel holds real copies (pyproject.toml's package-data globs follow the links, so a new task folder
or data file ships without being listed). Code reads them with `asset(...)`, never by walking up
from its own file, so an installed gptnl finds them from any working directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

AREAS = ("configs", "data_pipeline", "serving", "slurm", "evals")


def asset(area: str, *parts: str) -> Path:
    """The shipped file or folder `area/parts...`, e.g. `asset("evals", "tasks")`.

    A path on disk: gptnl is installed as files (a wheel unpacked into site-packages, or a clone),
    never zipped, so callers may open, glob and hand it to subprocesses. Resolved: in a clone it names
    the top-level folder (`evals/tasks/...`), as messages and records should."""
    if area not in AREAS:
        raise ValueError(f"unknown asset area {area!r}; known: {', '.join(AREAS)}")
    return Path(str(files(__name__).joinpath(area, *parts))).resolve()
