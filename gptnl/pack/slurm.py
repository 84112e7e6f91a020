"""`gptnl slurm submit pack`: the tokenising tasks as one datatrove Slurm array job, then one job
that runs `gptnl pack` itself with the same arguments. By then every file's part is finished, so
that job only merges them into the shards and writes the manifest. A preempted task (SIGUSR1
before the time limit) is requeued by datatrove and redoes only the file it was in."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from gptnl.config import ClusterProfile
from gptnl.data_pipeline.slurm import sbatch_extras
from gptnl.pack.run import WORK, prepare
from gptnl.pack.tasks import PackFiles
from gptnl.slurm.submit import setup_command


def _executor(files: list[Path], tokenizer_dir: Path, parts: Path, out: Path, val_fraction: float,
              cluster: ClusterProfile, tasks: int, workers: int | None):
    from datatrove.executor.slurm import SlurmPipelineExecutor

    d = cluster.data
    logs = out / WORK / f"logs-slurm-{tasks}"
    return SlurmPipelineExecutor(
        [PackFiles(files, tokenizer_dir, parts, val_fraction)], tasks=tasks, time=d.time, partition=d.partition,
        cpus_per_task=d.cpus_per_task, workers=workers if workers else -1, job_name="gptnl-pack",
        qos=cluster.qos or "", env_command=setup_command(cluster), sbatch_args=sbatch_extras(cluster),
        max_array_size=d.max_array_size, logging_dir=str(logs), slurm_logs_folder=str(logs / "slurm_logs"),
        requeue=True, mail_type="NONE")


def submit(corpus: Path, tokenizer_dir: Path, seq_len: int, out: Path, *, val_fraction: float, shard_tokens: int,
           cluster: ClusterProfile, tasks: int | None = None, workers: int | None = None) -> dict:
    """Submit the tasks and the merge; returns {"tasks": job id, "merge": job id, "logs": dir}."""
    from datatrove.executor.slurm import launch_slurm_job

    out = Path(out).resolve()
    _, files, parts = prepare(corpus, tokenizer_dir, seq_len, out, val_fraction, shard_tokens)
    tasks = min(len(files), tasks or len(files))
    ex = _executor(files, Path(tokenizer_dir).resolve(), parts, out, val_fraction, cluster, tasks, workers)
    ex.run()
    logs = out / WORK / f"logs-slurm-{tasks}"
    args = {k: v for k, v in ex.get_sbatch_args().items() if k not in ("array", "signal")}
    args.update({"job-name": "gptnl-pack-merge", "output": str(logs / "merge-%j.out"),
                 "error": str(logs / "merge-%j.out")})
    command = " ".join(shlex.quote(a) for a in (
        sys.executable, "-m", "gptnl", "pack", str(Path(corpus).resolve()), "--tokenizer",
        str(Path(tokenizer_dir).resolve()), "--out", str(out), "--seq-len", str(seq_len), "--val-fraction",
        repr(val_fraction), "--shard-tokens", str(shard_tokens)))
    dependency = [f"--dependency=afterok:{ex.job_id}"] if ex.job_id not in (None, -1) else []
    merge = launch_slurm_job(ex.get_launch_file_contents(args, command), ex.job_id_retriever, *dependency)
    return {"tasks": ex.job_id, "merge": merge, "logs": str(logs)}
