"""`gptnl slurm submit train|finetune`: an sbatch script from the template and the cluster profile, checked
against the partition before anything is submitted; and status, logs and cancel for its jobs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from gptnl.assets import asset
from gptnl.config import ClusterProfile, load_cluster, load_finetune_config, load_train_config, slurm_time_seconds
from gptnl.errors import GptnlError

TEMPLATES = asset("slurm", "templates")


@dataclass(frozen=True)
class Job:
    script: str
    path: Path
    logs: Path


def setup_command(cluster: ClusterProfile) -> str:
    """The profile's set-up lines, or activation of the environment this gptnl runs from."""
    if cluster.setup:
        return "\n".join(cluster.setup)
    return f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"


@dataclass(frozen=True)
class Shape:
    partition: str
    time: str
    tasks_per_node: int
    cpus_per_task: int
    gpus_per_node: int


def shape(cluster: ClusterProfile, cluster_path: Path, job, *, nodes: int, time: str | None,
          partition: str | None, gpus_per_node: int | None, tasks_per_node: int | None) -> Shape:
    """What a job asks of each node, refused (naming the cause) when the partition cannot give it."""
    name = partition or job.partition
    part = cluster.partitions.get(name)
    if part is None:
        raise GptnlError(f"--partition {name}: not in {cluster_path} (it has: {', '.join(cluster.partitions)})")
    time = time or job.time
    try:
        seconds = slurm_time_seconds(time)
    except ValueError as exc:
        raise GptnlError(f"--time: {exc}") from None
    if seconds > slurm_time_seconds(part.max_time):
        raise GptnlError(f"--time {time} is above the {name} limit of {part.max_time}")
    gpus = part.gpus_per_node if gpus_per_node is None else gpus_per_node
    if gpus > part.gpus_per_node:
        raise GptnlError(f"{gpus} GPUs per node asked, but {name} nodes have "
                         f"{part.gpus_per_node or 'no'} GPU{'s' if part.gpus_per_node != 1 else ''}")
    tasks = tasks_per_node or max(1, gpus)
    cpus = job.cpus_per_task or max(1, part.cpus_per_node // tasks)
    if tasks * cpus > part.cpus_per_node:
        raise GptnlError(f"{tasks} tasks x {cpus} CPUs per node is more than a {name} node has ({part.cpus_per_node})")
    if nodes < 1:
        raise GptnlError("--nodes must be at least 1")
    return Shape(name, time, tasks, cpus, gpus)


def _template(name: str) -> jinja2.Template:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True).get_template(name)


def _common(cluster: ClusterProfile, s: Shape, nodes: int, logs: Path) -> dict:
    return dict(partition=s.partition, nodes=nodes, tasks_per_node=s.tasks_per_node, cpus_per_task=s.cpus_per_task,
                gpus_per_node=s.gpus_per_node, time=s.time, logs=logs, setup=setup_command(cluster),
                extra_sbatch=[(k, v) for k in ("account", "qos", "reservation", "constraint")
                              if (v := getattr(cluster, k))],
                env=[(k, shlex.quote(v)) for k, v in cluster.env.items()], python=shlex.quote(sys.executable))


def default_run_dir(cluster: ClusterProfile, cluster_path: Path, config: Path) -> Path:
    """The profile's `scratch` folder (with $USER and the like expanded) / the config's name."""
    if not cluster.scratch:
        raise GptnlError(f"--run-dir not given and {cluster_path} names no `scratch:` folder; pass --run-dir")
    return Path(os.path.expandvars(os.path.expanduser(cluster.scratch))) / Path(config).stem


def render_train(config: Path, cluster_path: Path, *, run_dir: Path | None = None, universal: bool = False,
                 **resources) -> Job:
    """The training job script; refuses what the partition cannot give, naming the cause. `resources`:
    nodes, time, partition, gpus_per_node, max_steps, grace_s, max_restarts (None: the profile's)."""
    cluster = load_cluster(cluster_path)
    run_dir = Path(run_dir or default_run_dir(cluster, cluster_path, config)).resolve()
    load_train_config(config)  # a config that does not validate is refused here, not in the job
    return _render_trainer("train", cluster, cluster_path, run_dir, universal=universal,
                           args=[Path(config).resolve(), "--run-dir", run_dir], **resources)


def render_finetune(config: Path, cluster_path: Path, *, base: Path, data: Path, out: Path | None = None,
                    universal: bool = False, **resources) -> Job:
    """The fine-tuning job script: the same job shape, signals and requeue as training (the trainers
    share the preemption code); `out` defaults to the profile's scratch/<config name>."""
    cluster = load_cluster(cluster_path)
    out = Path(out or default_run_dir(cluster, cluster_path, config)).resolve()
    load_finetune_config(config)
    for flag, path in (("--base", base), ("--data", data)):
        if not Path(path).exists():
            raise GptnlError(f"{flag} {path}: not found (a path the cluster's nodes see)")
    return _render_trainer("finetune", cluster, cluster_path, out, universal=universal,
                           args=[Path(config).resolve(), "--base", Path(base).resolve(), "--data",
                                 Path(data).resolve(), "--out", out], **resources)


def _render_trainer(stage: str, cluster: ClusterProfile, cluster_path: Path, run_dir: Path, *, args: list,
                    nodes: int = 1, time: str | None = None, partition: str | None = None,
                    gpus_per_node: int | None = None, max_steps: int | None = None, grace_s: int | None = None,
                    max_restarts: int | None = None, universal: bool = False) -> Job:
    if cluster.train is None:
        raise GptnlError(f"{cluster_path}: no `train:` section (partition, time, tasks per node)")
    t = cluster.train
    s = shape(cluster, cluster_path, t, nodes=nodes, time=time, partition=partition, gpus_per_node=gpus_per_node,
              tasks_per_node=t.tasks_per_node)
    grace = t.grace_s if grace_s is None else grace_s
    if grace < 0 or (grace and grace >= slurm_time_seconds(s.time)):
        raise GptnlError(f"--grace {grace}: must be 0 (no warning signal) or shorter than the time limit {s.time}")
    logs = run_dir / "slurm"
    script = _template("train.sbatch.j2").render(
        **_common(cluster, s, nodes, logs), name=f"gptnl-{stage}-{run_dir.name}", stage=stage, grace_s=grace,
        omp_threads=s.cpus_per_task, module=f"gptnl.{stage}", stage_args=" ".join(shlex.quote(str(a)) for a in args),
        max_restarts=t.max_restarts if max_restarts is None else max_restarts,
        train_args=f" --max-steps {max_steps}" if max_steps else "", universal=universal)
    return Job(script, logs / f"{stage}.sbatch", logs)


def render_ray(command: list[str], cluster_path: Path, *, run_dir: Path, nodes: int = 1, time: str | None = None,
               partition: str | None = None, gpus_per_node: int | None = None, kind: str = "ray") -> Job:
    """A job that starts a Ray cluster on its allocation and runs `command` (a driver) against it."""
    cluster = load_cluster(cluster_path)
    if cluster.ray is None:
        raise GptnlError(f"{cluster_path}: no `ray:` section (partition, time, tasks per node)")
    r = cluster.ray
    s = shape(cluster, cluster_path, r, nodes=nodes, time=time, partition=partition, gpus_per_node=gpus_per_node,
              tasks_per_node=r.tasks_per_node)
    run_dir = Path(run_dir).resolve()
    logs = run_dir / "slurm"
    script = _template("ray.sbatch.j2").render(
        **_common(cluster, s, nodes, logs), name=f"gptnl-{kind}-{run_dir.name}", run_dir=shlex.quote(str(run_dir)),
        gpus_per_task=s.gpus_per_node // s.tasks_per_node, command=" ".join(shlex.quote(c) for c in command))
    return Job(script, logs / f"{kind}.sbatch", logs)


def sbatch(job: Job) -> str:
    """Write the script next to the logs and submit it; returns the job id."""
    job.logs.mkdir(parents=True, exist_ok=True)
    job.path.write_text(job.script)
    try:
        res = subprocess.run(["sbatch", "--parsable", str(job.path)], capture_output=True, text=True)
    except FileNotFoundError:
        raise GptnlError("sbatch not found: run this on a Slurm login node (or scripts/slurm-local.sh start)") \
            from None
    if res.returncode != 0:
        raise GptnlError(f"sbatch refused the job: {res.stderr.strip()}")
    return res.stdout.strip().split(";")[0]


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}


def job_fields(job_id: str) -> dict[str, str]:
    res = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        raise GptnlError(f"job {job_id}: not known to Slurm ({res.stderr.strip() or 'no such job'})")
    return dict(f.split("=", 1) for f in res.stdout.splitlines()[0].split() if "=" in f)


def accounting(job_id: str) -> dict[str, str] | None:
    """The job's record in Slurm's accounting (sacct), or None where the site keeps none."""
    fields = ("JobID", "JobName", "State", "ExitCode", "Elapsed", "Timelimit", "Start", "End")
    try:
        res = subprocess.run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", ",".join(fields)],
                             capture_output=True, text=True)
    except FileNotFoundError:
        return None
    rows = [line.split("|") for line in res.stdout.splitlines() if line.strip()]
    if res.returncode != 0 or not rows:
        return None
    return dict(zip(fields, rows[-1], strict=False))


def status(job_id: str | None) -> str:
    if job_id is None:
        res = subprocess.run(["squeue", "--me", "-o", "%.10i %.24j %.10T %.10M %.12l %.6D %R"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise GptnlError(f"squeue failed: {res.stderr.strip()}")
        return res.stdout.rstrip()
    try:
        f = job_fields(job_id)
    except GptnlError:
        # the controller forgets finished jobs after MinJobAge; accounting keeps them
        if (a := accounting(job_id)) is None:
            raise
        return (f"job {job_id} {a['JobName']}: {a['State']} (from accounting), run time {a['Elapsed']} of "
                f"{a['Timelimit']}, exit code {a['ExitCode']}, started {a['Start']}, ended {a['End']}")
    return (f"job {job_id} {f.get('JobName')}: {f.get('JobState')} (reason {f.get('Reason')}), "
            f"restarts {f.get('Restarts')}, run time {f.get('RunTime')} of {f.get('TimeLimit')}, "
            f"exit code {f.get('ExitCode')}, log {f.get('StdOut')}")


def log_path(job_id: str) -> Path:
    return Path(job_fields(job_id)["StdOut"])


RESTART_LINE = re.compile(r"^gptnl: job \d+ restart (\d+) on ", re.M)


def restart_part(text: str, restart: int) -> str:
    """The part of an appended log that one run of a requeued job wrote (the job script marks each)."""
    marks = [(int(m.group(1)), m.start()) for m in RESTART_LINE.finditer(text)]
    for i, (n, at) in enumerate(marks):
        if n == restart:
            return text[at:marks[i + 1][1]] if i + 1 < len(marks) else text[at:]
    runs = ", ".join(str(n) for n, _ in marks) or "none marked"
    raise GptnlError(f"no restart {restart} in this log (runs: {runs})")


def follow(job_id: str, path: Path, start: int, poll_s: float = 0.5):
    """Yield what the log gains from byte `start` on, until the job has ended and all is read."""
    while True:
        ended = job_fields(job_id).get("JobState") in FINAL_STATES
        if path.is_file():
            with path.open("rb") as f:
                f.seek(start)
                chunk = f.read()
            if chunk:
                start += len(chunk)
                yield chunk.decode(errors="replace")
                continue
        if ended:
            return
        time.sleep(poll_s)


def cancel(job_id: str) -> None:
    res = subprocess.run(["scancel", str(job_id)], capture_output=True, text=True)
    if res.returncode != 0:
        raise GptnlError(f"scancel {job_id}: {res.stderr.strip()}")
