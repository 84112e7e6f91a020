"""Training inside Slurm job steps, on the real single-node Slurm of scripts/slurm-local.sh.

One node here: multi-node rendezvous is the same code with more hosts in SLURM_JOB_NODELIST,
which cannot be shown on one machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, losses, run_trainer, slurm_job, wait_slurm_job, write_train_config

from gptnl.slurm.env import from_slurm, tasks_on_this_node

LOCAL = ROOT / "slurm" / "clusters" / "local.yaml"

STEP = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
        "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_JOB_ID": "1234",
        "MASTER_ADDR": "gcn12"}


def test_ranks_come_from_the_step():
    assert from_slurm(STEP) == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
                                "MASTER_ADDR": "gcn12", "MASTER_PORT": "21234"}


@pytest.mark.parametrize("env", [
    {k: v for k, v in STEP.items() if k != "SLURM_STEP_ID"},  # the batch script itself: one process
    {**STEP, "RANK": "0"},  # torchrun (or another launcher) already set the ranks
    {},  # not in Slurm
])
def test_nothing_is_set_outside_a_step_or_under_a_launcher(env):
    assert from_slurm(env) is None


def test_tasks_per_node_notation():
    assert [tasks_on_this_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]


def test_srun_with_one_task_per_process_trains_like_torchrun(tmp_path, sample_shards, slurm_cluster):
    """`srun` starts two tasks of the trainer (no torchrun); they find each other through Slurm's
    variables, and every step's loss equals a torchrun run of the same config."""
    cfg = write_train_config(tmp_path / "train.yaml", sample_shards)
    ref = run_trainer(cfg, tmp_path / "ref", 2)
    assert ref.returncode == 0, ref.stderr[-3000:]
    script = tmp_path / "job.sbatch"
    script.write_text(f"""#!/bin/bash
#SBATCH --job-name=gptnl-srun-test
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:10:00
#SBATCH --output={tmp_path}/job-%j.out
export OMP_NUM_THREADS=1
srun --kill-on-bad-exit=1 {sys.executable} -m gptnl.train {cfg} --run-dir {tmp_path / 'slurm'} --no-progress
""")
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
    job_id = job.stdout.strip().split(";")[0]
    final = wait_slurm_job(job_id, timeout=600)
    log = next(tmp_path.glob("job-*.out")).read_text()
    assert final["JobState"] == "COMPLETED", log[-3000:]
    assert re.search(r"^\S+:0 .*2 process\(es\)", log, re.M), log[-3000:]  # labelled node:rank
    assert slurm_job(job_id)["NumTasks"] == "2"
    ours, theirs = losses(tmp_path / "slurm"), losses(tmp_path / "ref")
    assert ours.keys() == theirs.keys() and len(ours) >= 8
    for step in ours:
        assert abs(ours[step] - theirs[step]) < 1e-5 * theirs[step], (step, ours[step], theirs[step])


def gptnl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptnl", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, sample_shards):
    """A 16-step config and its uninterrupted torchrun losses."""
    base = tmp_path_factory.mktemp("slurm-train")
    cfg = write_train_config(base / "train.yaml", sample_shards, max_steps=16)
    ref = run_trainer(cfg, base / "ref", 2)
    assert ref.returncode == 0, ref.stderr[-3000:]
    return cfg, losses(base / "ref")


def test_dry_run_prints_the_script(tmp_path, long_run):
    res = gptnl("slurm", "submit", "train", str(long_run[0]), "--cluster", str(LOCAL), "--run-dir",
                str(tmp_path / "run"), "--dry-run")
    assert res.returncode == 0, res.stderr
    for line in ("#SBATCH --partition=debug", "#SBATCH --ntasks-per-node=2", "#SBATCH --signal=B:USR1@60",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append", "srun --kill-on-bad-exit=1",
                 "trap 'usr1=1;", "scontrol requeue", "-lt 3 ]"):
        assert line in res.stdout
    assert not (tmp_path / "run").exists()  # nothing submitted, nothing written
    res = gptnl("slurm", "submit", "train", str(long_run[0]), "--cluster", str(LOCAL), "--run-dir",
                str(tmp_path / "run"), "--grace", "0", "--dry-run")
    assert "--signal" not in res.stdout and "No warning signal" in res.stdout


def test_dry_runs_of_the_pipeline_and_ray_jobs(tmp_path):
    res = gptnl("slurm", "submit", "data", str(ROOT / "data_pipeline" / "recipes" / "default.yaml"), "--cluster",
                str(LOCAL), "--out", str(tmp_path / "corpus"), "--dry-run")
    assert res.returncode == 0, res.stderr
    names = re.findall(r"^# ---- (\S+) ----$", res.stdout, re.M)
    assert names == ["filter", "signatures", "buckets", "clusters", "near-dedup", "finalise"]
    assert res.stdout.count("#SBATCH --signal=USR1@120") == 5 and res.stdout.count("#SBATCH --requeue") == 6
    assert "gptnl data build" in res.stdout.split("# ---- finalise ----")[1].replace("-m gptnl ", "gptnl ")
    assert not (tmp_path / "corpus").exists()
    res = gptnl("slurm", "submit", "ray", "--cluster", str(ROOT / "slurm" / "clusters" / "snellius.yaml"),
                "--run-dir", str(tmp_path / "ray"), "--nodes", "2", "--dry-run", "--", "python", "sweep.py")
    assert res.returncode == 0, res.stderr
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "export RAY_AUTH_MODE=token",
                 "--head --node-ip-address", "--num-gpus=4", "python sweep.py"):
        assert line in res.stdout
    assert not (tmp_path / "ray").exists()
    res = gptnl("slurm", "submit", "eval", str(ROOT / "evals" / "sweeps" / "example.yaml"), "--cluster", str(LOCAL),
                "--run-dir", str(tmp_path / "ev"), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "#SBATCH --job-name=gptnl-eval-ev" in res.stdout and f"--results {tmp_path / 'ev' / 'results'}" in res.stdout
    bad = tmp_path / "bad-sweep.yaml"
    bad.write_text("suite: x.yaml\nmodels: {}\n")
    res = gptnl("slurm", "submit", "eval", str(bad), "--cluster", str(LOCAL), "--run-dir", str(tmp_path / "ev"))
    assert res.returncode == 2 and "models" in res.stderr and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("args, text", [
    (["--time", "2-00:00:00"], "above the debug limit of 1-00:00:00"),
    (["--gpus-per-node", "1"], "debug nodes have no GPUs"),
    (["--partition", "gpu_h100"], "not in"),
    (["--time", "soon"], "is not a Slurm time"),
    (["--time", "00:01:00"], "--grace 60: must be 0 (no warning signal) or shorter than the time limit"),
])
def test_refusals_before_submit(tmp_path, long_run, args, text):
    res = gptnl("slurm", "submit", "train", str(long_run[0]), "--cluster", str(LOCAL), "--run-dir",
                str(tmp_path / "run"), *args)
    assert res.returncode == 2 and text in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


def test_refusals_of_profile_and_config(tmp_path, long_run):
    big = tmp_path / "big.yaml"
    big.write_text(LOCAL.read_text().replace("cpus_per_task: 1\n  grace_s", "cpus_per_task: 2\n  grace_s"))
    res = gptnl("slurm", "submit", "train", str(long_run[0]), "--cluster", str(big), "--run-dir", str(tmp_path))
    assert res.returncode == 2 and "2 tasks x 2 CPUs per node is more than a debug node has (2)" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(long_run[0]).read_text() + "zero_stage: 7\n")
    res = gptnl("slurm", "submit", "train", str(bad), "--cluster", str(LOCAL), "--run-dir", str(tmp_path))
    assert res.returncode == 2 and "zero_stage" in res.stderr
    res = gptnl("slurm", "submit", "ray", "--cluster", str(LOCAL), "--run-dir", str(tmp_path), "--gpus-per-node",
                "2", "--", "python", "x.py")
    assert res.returncode == 2 and "2 GPUs per node asked, but debug nodes have no GPUs" in res.stderr


def test_submitted_training_survives_preemption_without_losing_a_step(tmp_path, long_run, slurm_cluster):
    """`gptnl slurm submit train` on the local Slurm; `scancel --batch --signal=USR1` mid-run, as Slurm
    does before the time limit: the job script's trap forwards it to the trainers, which checkpoint and
    exit 75; the script requeues, the job resumes with SLURM_RESTART_COUNT=1 and finishes; every
    step's loss equals the uninterrupted run's. `logs --follow` streams it all and ends with the job."""
    cfg, reference = long_run
    run = tmp_path / "run"
    res = gptnl("slurm", "submit", "train", str(cfg), "--cluster", str(LOCAL), "--run-dir", str(run))
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip()
    assert f"logs in {run / 'slurm'}, checkpoints in {run}" in res.stderr
    follow = subprocess.Popen([sys.executable, "-m", "gptnl", "slurm", "logs", job, "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ((run / "metrics.jsonl").is_file() and len(losses(run)) >= 3):
        assert time.monotonic() < deadline, gptnl("slurm", "status", job).stdout
        time.sleep(0.05)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    final = wait_slurm_job(job, timeout=600)
    followed, _ = follow.communicate(timeout=60)  # --follow returns by itself once the job has ended
    log = gptnl("slurm", "logs", job, "--lines", "0").stdout
    assert final["JobState"] == "COMPLETED" and final["Restarts"] == "1", log[-3000:]
    assert "gptnl: SIGUSR1: asking the trainer for a checkpoint" in log and "requeueing job" in log
    assert followed.strip().endswith(log.strip().splitlines()[-1].strip()) and "restart 1 on" in followed
    status = gptnl("slurm", "status", job).stdout
    assert "COMPLETED" in status and "restarts 1" in status
    second = gptnl("slurm", "logs", job, "--restart", "1", "--lines", "0").stdout
    assert second.startswith(f"gptnl: job {job} restart 1 on") and "resumed from" in second
    assert "resumed from" not in gptnl("slurm", "logs", job, "--restart", "0", "--lines", "0").stdout
    ours = losses(run)
    assert sorted(ours) == sorted(reference)
    for step, loss in reference.items():
        assert abs(ours[step] - loss) < 1e-5 * loss, (step, ours[step], loss)
    assert "checkpoint written after a signal" in log  # the trainer exited 75 after checkpointing
    assert json.loads((run / "global_step16" / "gptnl_complete.json").read_text())["step"] == 16


def test_time_limit_ends_in_timeout_and_a_resubmission_resumes(tmp_path, sample_shards, slurm_cluster):
    """A one-minute job without the warning signal (--grace 0) runs into its time limit: Slurm's
    SIGTERM makes the trainers checkpoint, `status` says TIMEOUT, and the same command with the same
    run dir resumes from that checkpoint and finishes."""
    cfg = write_train_config(tmp_path / "train.yaml", sample_shards, max_steps=100000,
                             checkpoint={"every": 1000, "keep_last": 2}, eval={"every": 100000, "batches": 1},
                             metrics={"log_every": 10, "tensorboard": False})
    run = tmp_path / "run"
    submit = ["slurm", "submit", "train", str(cfg), "--cluster", str(LOCAL), "--run-dir", str(run), "--grace", "0"]
    res = gptnl(*submit, "--time", "1")
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip()
    final = wait_slurm_job(job, timeout=300)
    log = gptnl("slurm", "logs", job, "--lines", "0").stdout
    assert final["JobState"] == "TIMEOUT", log[-3000:]
    assert "TIMEOUT" in gptnl("slurm", "status", job).stdout
    assert "DUE TO TIME LIMIT" in log and "gptnl: SIGTERM" in log
    saved = int((run / "latest").read_text().strip().removeprefix("global_step"))
    assert saved > 0 and (run / f"global_step{saved}" / "gptnl_complete.json").is_file()
    res = gptnl(*submit, "--max-steps", str(saved + 4))
    assert res.returncode == 0, res.stderr
    again = res.stdout.strip()
    final = wait_slurm_job(again, timeout=300)
    log = gptnl("slurm", "logs", again, "--lines", "0").stdout
    assert final["JobState"] == "COMPLETED", log[-3000:]
    assert f"at step {saved}" in log and f"done: step {saved + 4}" in log


def test_ray_cluster_on_the_allocation_runs_remote_tasks(tmp_path, slurm_cluster):
    """The Ray template on the local Slurm: a head and a second Ray node (two tasks of one job), joined
    with a per-job token; a driver's remote tasks run on both, and nothing is left behind."""
    driver = tmp_path / "driver.py"
    driver.write_text("""import os, ray
ray.init()
@ray.remote(num_cpus=1)
def node():
    import time
    time.sleep(0.5)
    return ray.get_runtime_context().get_node_id()
ran_on = set(ray.get([node.remote() for _ in range(8)]))
print("nodes", sum(n["Alive"] for n in ray.nodes()), "ran on", len(ran_on), "auth", os.environ["RAY_AUTH_MODE"])
""")
    run = tmp_path / "ray"
    res = gptnl("slurm", "submit", "ray", "--cluster", str(LOCAL), "--run-dir", str(run), "--",
                sys.executable, str(driver))
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip()
    final = wait_slurm_job(job, timeout=300)
    log = gptnl("slurm", "logs", job, "--lines", "0").stdout
    assert final["JobState"] == "COMPLETED", log[-3000:]
    assert "gptnl: 2 Ray node(s) up" in log and "nodes 2 ran on 2 auth token" in log
    assert not list((run / "ray").iterdir())  # the token is removed with the cluster
    time.sleep(1)
    assert subprocess.run(["pgrep", "-f", f"ray-{job}"], capture_output=True).returncode == 1  # no Ray left


def test_status_of_a_job_slurm_does_not_know(slurm_cluster):
    res = gptnl("slurm", "status", "987654")
    assert res.returncode == 2 and "job 987654: not known to Slurm" in res.stderr, res.stderr


def test_submitted_finetune_runs_on_two_tasks_and_writes_the_tuned_model(tmp_path, tiny_base, slurm_cluster):
    """`gptnl slurm submit finetune` on the local Slurm: two srun tasks take their ranks from Slurm,
    tune for a few steps and write the tuned model."""
    import yaml

    chats = sorted((ROOT / "data_pipeline" / "instructions").glob("*.jsonl"))[0].read_text().splitlines()[:40]
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(chats) + "\n")
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump({
        "method": "full", "backend": "deepspeed", "zero_stage": 2, "seq_len": 512, "max_steps": 3, "seed": 7,
        "batch": {"global_batch_size": 8, "micro_batch_size": 4}, "eval": {"every": 0},
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "weight_decay": 0.0, "warmup_steps": 1, "grad_clip": 1.0},
        "checkpoint": {"every": 0, "keep_last": 1},
        "data": {"licences": str(ROOT / "data_pipeline" / "licences.yaml"), "val_fraction": 0.1,
                 "decontamination": {"tasks": None}}}))
    out = tmp_path / "sft"
    res = gptnl("slurm", "submit", "finetune", str(cfg), "--cluster", str(LOCAL), "--base", str(tiny_base),
                "--data", str(data), "--out", str(out))
    assert res.returncode == 0, res.stderr
    final = wait_slurm_job(res.stdout.strip(), timeout=600)
    log = "".join(p.read_text() for p in (out / "slurm").glob("*.out"))
    assert final["JobState"] == "COMPLETED", log[-3000:]
    assert (out / "model" / "config.json").is_file()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps and {s["processes"] for s in steps} == {2}
