"""The built wheel, not the clone: installed (not editable) into a fresh virtualenv and run from a
folder that is no checkout, it lists every evaluation task, measures language ID on its bundled test
set and runs `gptnl demo --quick`. Everything it reads comes from its package data.

The wheel and its virtualenv are the shared fixtures in conftest.py (`wheel`, `wheel_venv`,
`wheel_demo`). Packages come from the configured indexes, as a user's `pip install` would get them
(and the local pip cache), at the versions of constraints.txt; vLLM, which lives in its own
environment, is the clone's `.venv-vllm` named by GPTNL_VLLM_PYTHON (or that variable when already set)."""

from __future__ import annotations

import zipfile

import pytest
from conftest import ROOT, sh

from gptnl.evals.tasks import TASKS_DIR, discover

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # a fresh install of every extra, then the demo


def test_the_wheel_ships_every_task_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for area in ("configs", "data_pipeline", "serving", "slurm", "evals"):
        tracked = [p for p in (ROOT / area).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        missing = [str(p.relative_to(ROOT)) for p in tracked
                   if f"gptnl/assets/{p.relative_to(ROOT).as_posix()}" not in names]
        assert tracked and not missing, missing
    assert not any(n.startswith(("configs/", "evals/", "tests/", "bench/")) for n in names)
    templates = sorted(p.name for p in (ROOT / "gptnl" / "templates").glob("*.j2"))
    assert templates and all(f"gptnl/templates/{t}" in names for t in templates), templates


def test_installed_wheel_runs_from_another_folder(wheel_demo):
    """The wheel lists every task, runs language ID on its bundled test set and runs the demo
    (`wheel_demo`, whose outputs test_demo.py checks in full) from a folder that is no checkout."""
    work, env, venv = wheel_demo.cwd, wheel_demo.env, wheel_demo.venv
    gptnl = wheel_demo.cmd[0]
    python = str(venv / "bin" / "python")
    where = sh([python, "-c", "import gptnl; print(gptnl.__file__)"], 60, cwd=work, env=env)
    assert "/site-packages/gptnl/" in where.stdout and str(ROOT) not in where.stdout  # the installed copy

    listed = sh([gptnl, "eval", "list"], 120, cwd=work, env=env).stdout
    for task in discover(TASKS_DIR):
        assert task in listed, task
    langid = sh([gptnl, "data", "langid"], 120, cwd=work, env=env).stdout
    assert "overall" in langid

    demo = wheel_demo.first
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo done" in demo.stdout
    assert (wheel_demo.out / "report.html").is_file() and (wheel_demo.out / "evals" / "results.jsonl").is_file()
