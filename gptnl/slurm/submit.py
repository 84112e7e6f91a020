"""`gptnl slurm submit train`: an sbatch script from the template and the cluster profile, checked
against the partition before anything is submitted; and status, logs and cancel for its jobs."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2

from gptnl.config import ClusterProfile, load_cluster, load_train_config, slurm_time_seconds
from gptnl.errors import GptnlError

TEMPLATES = Path(__file__).resolve().parents[2] / "slurm" / "templates"


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


def render_train(config: Path, cluster_path: Path, *, run_dir: Path, nodes: int = 1, time: str | None = None,
                 partition: str | None = None, gpus_per_node: int | None = None, max_steps: int | None = None) -> Job:
    """The training job script; refuses what the partition cannot give, naming the cause."""
    cluster = load_cluster(cluster_path)
    load_train_config(config)  # a config that does not validate is refused here, not in the job
    if cluster.train is None:
        raise GptnlError(f"{cluster_path}: no `train:` section (partition, time, tasks per node)")
    t = cluster.train
    name = partition or t.partition
    part = cluster.partitions.get(name)
    if part is None:
        raise GptnlError(f"--partition {name}: not in {cluster_path} (it has: {', '.join(cluster.partitions)})")
    time = time or t.time
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
    tasks = t.tasks_per_node or max(1, gpus)
    cpus = t.cpus_per_task or max(1, part.cpus_per_node // tasks)
    if tasks * cpus > part.cpus_per_node:
        raise GptnlError(f"{tasks} tasks x {cpus} CPUs per node is more than a {name} node has ({part.cpus_per_node})")
    if nodes < 1:
        raise GptnlError("--nodes must be at least 1")
    run_dir = Path(run_dir).resolve()
    logs = run_dir / "slurm"
    extra = [(k, v) for k in ("account", "qos", "reservation", "constraint") if (v := getattr(cluster, k))]
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                  keep_trailing_newline=True).get_template("train.sbatch.j2")
    script = template.render(
        name=f"gptnl-train-{run_dir.name}", partition=name, extra_sbatch=extra, nodes=nodes, tasks_per_node=tasks,
        cpus_per_task=cpus, gpus_per_node=gpus, time=time, logs=logs, grace_s=t.grace_s, setup=setup_command(cluster),
        omp_threads=cpus, python=shlex.quote(sys.executable), config=shlex.quote(str(Path(config).resolve())),
        run_dir=shlex.quote(str(run_dir)), max_restarts=t.max_restarts,
        train_args=f" --max-steps {max_steps}" if max_steps else "")
    return Job(script, logs / "train.sbatch", logs)


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


def job_fields(job_id: str) -> dict[str, str]:
    res = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        raise GptnlError(f"job {job_id}: not known to Slurm ({res.stderr.strip() or 'no such job'})")
    return dict(f.split("=", 1) for f in res.stdout.splitlines()[0].split() if "=" in f)


def status(job_id: str | None) -> str:
    if job_id is None:
        res = subprocess.run(["squeue", "--me", "-o", "%.10i %.24j %.10T %.10M %.12l %.6D %R"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise GptnlError(f"squeue failed: {res.stderr.strip()}")
        return res.stdout.rstrip()
    f = job_fields(job_id)
    return (f"job {job_id} {f.get('JobName')}: {f.get('JobState')} (reason {f.get('Reason')}), "
            f"restarts {f.get('Restarts')}, run time {f.get('RunTime')} of {f.get('TimeLimit')}, "
            f"exit code {f.get('ExitCode')}, log {f.get('StdOut')}")


def log_path(job_id: str) -> Path:
    return Path(job_fields(job_id)["StdOut"])


def cancel(job_id: str) -> None:
    res = subprocess.run(["scancel", str(job_id)], capture_output=True, text=True)
    if res.returncode != 0:
        raise GptnlError(f"scancel {job_id}: {res.stderr.strip()}")
