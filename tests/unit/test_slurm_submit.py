"""`gptnl slurm submit train` scripts rendered from the real templates and profiles (nothing submitted)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import ROOT

from gptnl.errors import GptnlError
from gptnl.slurm.submit import render_finetune, render_train

CONFIG = ROOT / "configs" / "train" / "tiny-cpu.yaml"
SNELLIUS = ROOT / "slurm" / "clusters" / "snellius.yaml"
LOCAL = ROOT / "slurm" / "clusters" / "local.yaml"
SFT = ROOT / "configs" / "finetune" / "tiny-sft.yaml"


def test_run_dir_defaults_to_the_profiles_scratch(monkeypatch):
    monkeypatch.setenv("USER", "jdoe")
    job = render_train(CONFIG, SNELLIUS)
    assert str(job.logs.parent) == "/scratch-shared/jdoe/gptnl/tiny-cpu"
    assert "--run-dir /scratch-shared/jdoe/gptnl/tiny-cpu " in job.script


def test_no_run_dir_and_no_scratch_is_refused():
    with pytest.raises(GptnlError, match="names no `scratch:` folder; pass --run-dir"):
        render_train(CONFIG, LOCAL)


def test_universal_applies_to_the_first_run_only(tmp_path):
    job = render_train(CONFIG, LOCAL, run_dir=tmp_path / "run", universal=True)
    script = tmp_path / "job.sh"
    script.write_text(job.script)
    assert "${universal}" in job.script
    # the guard line itself, run as bash would on the first run and on a requeued one
    guard = next(line for line in job.script.splitlines() if line.startswith("[ \"${SLURM_RESTART_COUNT"))
    for restarts, expect in (("0", " --universal"), ("2", "")):
        out = subprocess.run(["bash", "-c", f"universal=\n{guard}\nprintf %s \"$universal\""], text=True,
                             capture_output=True, env={"SLURM_RESTART_COUNT": restarts, "PATH": "/usr/bin:/bin"})
        assert out.stdout == expect
    plain = render_train(CONFIG, LOCAL, run_dir=tmp_path / "run")
    assert "${universal}" not in plain.script and "--universal" not in plain.script


def test_finetune_job_passes_universal_to_its_first_run(tmp_path):
    base, data = tmp_path / "base", tmp_path / "chats.jsonl"
    base.mkdir()
    data.write_text("")
    job = render_finetune(SFT, LOCAL, base=base, data=data, out=tmp_path / "sft", universal=True)
    srun = next(line for line in job.script.splitlines() if line.startswith("srun"))
    assert "-m gptnl.finetune" in srun and srun.rstrip(" &").endswith("${universal}")
    assert '[ "${SLURM_RESTART_COUNT:-0}" -eq 0 ] && universal=" --universal"' in job.script
    plain = render_finetune(SFT, LOCAL, base=base, data=data, out=tmp_path / "sft")
    assert "${universal}" not in plain.script and "--universal" not in plain.script


def test_finetune_job_runs_the_finetune_module_with_its_paths(tmp_path):
    base, data = tmp_path / "base", tmp_path / "chats.jsonl"
    base.mkdir()
    data.write_text("")
    job = render_finetune(SFT, LOCAL, base=base, data=data, out=tmp_path / "sft", max_steps=7)
    srun = next(line for line in job.script.splitlines() if line.startswith("srun "))
    assert f"-m gptnl.finetune {SFT} --base {base} --data {data} --out {tmp_path / 'sft'} --no-progress " \
           "--max-steps 7 &" in srun
    assert "#SBATCH --requeue" in job.script and "scontrol requeue" in job.script
    assert job.path == tmp_path / "sft" / "slurm" / "finetune.sbatch"


def test_finetune_job_refuses_a_missing_base(tmp_path):
    with pytest.raises(GptnlError, match=r"--base .*missing: not found"):
        render_finetune(SFT, LOCAL, base=tmp_path / "missing", data=tmp_path, out=tmp_path / "sft")


def test_a_noted_checkpoint_is_requeued_even_when_srun_killed_the_last_ranks(tmp_path):
    """One rank exits 75 a moment before the others and srun's --kill-on-bad-exit ends them (143):
    the trainers' note of a finished checkpoint still requeues the job; without it, 143 fails it."""
    job = render_train(CONFIG, LOCAL, run_dir=tmp_path / "run")
    lines = job.script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("preempted="))
    tail = "\n".join(lines[start:])
    (tmp_path / "run" / "slurm").mkdir(parents=True)
    env = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "0", "PATH": "/usr/bin:/bin"}
    for noted, expect in ((True, "requeue 7"), (False, "exit 143")):
        note = tmp_path / "run" / "slurm" / "preempted-7-0"
        note.touch() if noted else note.unlink(missing_ok=True)
        script = f"scontrol() {{ echo \"$1 $2\"; }}\nusr1=1\nrc=143\n{tail}"
        out = subprocess.run(["bash", "-c", script + "\n"], text=True, capture_output=True, env=env)
        got = "exit 143" if out.returncode == 143 else out.stdout.strip().splitlines()[-1]
        assert got == expect, (out.stdout, out.stderr)
