"""The built wheel, not the clone: installed (not editable) into a fresh virtualenv and run from a
folder that is no checkout, it lists every evaluation task, measures language ID on its bundled test
set and runs `gptnl demo --quick`. Everything it reads comes from its package data.

The wheel is built from a copy of the working tree (an in-tree build would leave `build/` behind
and could ship stale files from it). Packages come from the configured indexes, as a user's
`pip install` would get them (and the local pip cache), at the versions of constraints.txt; vLLM,
which lives in its own environment, is the clone's `.venv-vllm` named by GPTNL_VLLM_PYTHON (or that variable when already set)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gptnl.evals.tasks import TASKS_DIR, discover

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # a fresh install of every extra, then the demo
ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv*", "runs", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".torch_extensions", "bench", "tests")
TORCH = "torch==2.13.0"  # the README's first install step, on its own (no CUDA build on a CPU machine)


def sh(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "gptnl"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)
    dist = src.parent / "dist"
    # no build isolation: this interpreter's setuptools builds it, so the build needs no download
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(dist)],
       300)
    (whl,) = dist.glob("gptnl-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    sh([sys.executable, "-m", "venv", str(env_dir)], 120)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    sh([*pip, TORCH], 600)
    sh([*pip, "-c", str(ROOT / "constraints.txt"), f"gptnl[all] @ {wheel.as_uri()}"], 900)
    return env_dir


def test_the_wheel_ships_every_task_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for area in ("configs", "data_pipeline", "serving", "slurm", "evals"):
        tracked = [p for p in (ROOT / area).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        missing = [str(p.relative_to(ROOT)) for p in tracked
                   if f"gptnl/assets/{p.relative_to(ROOT).as_posix()}" not in names]
        assert tracked and not missing, missing
    assert not any(n.startswith(("configs/", "evals/", "tests/", "bench/")) for n in names)


def test_installed_wheel_runs_from_another_folder(venv, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    vllm = os.environ.get("GPTNL_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COLUMNS="200", GPTNL_VLLM_PYTHON=vllm, PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    gptnl = str(venv / "bin" / "gptnl")
    where = sh([str(venv / "bin" / "python"), "-c", "import gptnl; print(gptnl.__file__)"], 60, cwd=work, env=env)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout  # the installed copy, not the clone

    listed = sh([gptnl, "eval", "list"], 120, cwd=work, env=env).stdout
    for task in discover(TASKS_DIR):
        assert task in listed, task
    langid = sh([gptnl, "data", "langid"], 120, cwd=work, env=env).stdout
    assert "overall" in langid

    demo = sh([gptnl, "demo", "--quick", "--out", str(work / "demo")], 1500, cwd=work, env=env)
    assert "demo done" in demo.stdout
    assert (work / "demo" / "report.html").is_file() and (work / "demo" / "evals" / "results.jsonl").is_file()
