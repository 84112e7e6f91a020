"""The corpus pipeline as Slurm array jobs: datatrove's Slurm executor, one array job per stage,
chained with `afterok`, then one job that finishes the corpus.

The final job is `gptnl data build` itself on the local executor: every stage's completion markers
are in place by then, so it skips them all and only checks the ledger and writes stats, card and
manifest. A preempted task (SIGUSR1, sent 120 s before the time limit or by the scheduler) is
requeued by datatrove's handler and skips nothing it had not finished: its outputs are per rank.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from gptnl.config import ClusterProfile, RecipeConfig
from gptnl.data_pipeline.stages import WORK, stages
from gptnl.slurm.submit import setup_command

GRACE_S = 120


def sbatch_extras(cluster: ClusterProfile) -> dict[str, str]:
    d = cluster.data
    extra = {
        "signal": f"USR1@{GRACE_S}",
        "open-mode": "append",  # a requeued task adds to its log instead of truncating it
        "kill-on-invalid-dep": "yes",  # a failed stage cancels the stages after it instead of leaving them pending
        "mem-per-cpu": f"{max(1, round(d.mem_gb_per_cpu * 1024))}M",  # sbatch takes whole numbers only
    }
    for key in ("account", "reservation", "constraint"):
        if (value := getattr(cluster, key)) is not None:
            extra[key] = value
    return extra


def _executors(recipe: RecipeConfig, out: Path, cluster: ClusterProfile, workers: int | None) -> list:
    """One datatrove Slurm executor per stage, each depending on the one before."""
    from datatrove.executor.slurm import SlurmPipelineExecutor

    d = cluster.data
    logs = out / WORK / "logs"
    previous = None
    executors = []
    for steps, tasks, name in stages(recipe, out):
        previous = SlurmPipelineExecutor(
            steps, tasks=tasks, time=d.time, partition=d.partition, cpus_per_task=d.cpus_per_task,
            workers=workers if workers else -1, job_name=f"gptnl-data-{name}", qos=cluster.qos or "",
            env_command=setup_command(cluster), sbatch_args=sbatch_extras(cluster),
            max_array_size=d.max_array_size, depends=previous, logging_dir=str(logs / name),
            slurm_logs_folder=str(logs / name / "slurm_logs"), requeue=True, mail_type="NONE")
        executors.append((name, previous))
    return executors


def _finalise_script(recipe_path: Path, out: Path, last) -> str:
    logs = out / WORK / "logs"
    args = {k: v for k, v in last.get_sbatch_args().items() if k != "array"}
    args.update({"job-name": "gptnl-data-finalise", "output": str(logs / "finalise-%j.out"),
                 "error": str(logs / "finalise-%j.out")})
    args.pop("signal", None)
    command = " ".join(shlex.quote(a) for a in (
        sys.executable, "-m", "gptnl", "data", "build", str(Path(recipe_path).resolve()), "--out", str(out)))
    return last.get_launch_file_contents(args, command)


def scripts(recipe_path: Path, recipe: RecipeConfig, out: Path, cluster: ClusterProfile,
            workers: int | None) -> list[tuple[str, str]]:
    """The sbatch script of every stage and of the final job, as `submit` would send them (a dry run)."""
    existed = out.exists()
    try:
        found = []
        for name, ex in _executors(recipe, out, cluster, workers):
            tasks = min(ex.tasks, ex.max_array_size) if ex.max_array_size != -1 else ex.tasks
            run = f"srun -l -n 1 launch_pickled_pipeline {ex.logging_dir.resolve_paths('executor.pik')}"
            found.append((name, ex.get_launch_file_contents(ex.get_sbatch_args(tasks), run)))
        found.append(("finalise", _finalise_script(recipe_path, out, ex)))
        return found
    finally:
        if not existed and out.exists():  # datatrove makes its log folders while writing the scripts
            shutil.rmtree(out)


def submit(recipe_path: Path, recipe: RecipeConfig, out: Path, cluster: ClusterProfile,
           workers: int | None) -> dict:
    """Submit every stage and the final job; returns {"jobs": {stage: job id}, "finalise": id, "logs": dir}."""
    from datatrove.executor.slurm import launch_slurm_job

    executors = _executors(recipe, out, cluster, workers)
    last = executors[-1][1]
    last.run()  # launches its dependencies first, in order
    jobs = {name: ex.job_id for name, ex in executors}
    dependency = [f"--dependency=afterok:{last.job_id}"] if last.job_id not in (None, -1) else []
    finalise = launch_slurm_job(_finalise_script(recipe_path, out, last), last.job_id_retriever, *dependency)
    return {"jobs": jobs, "finalise": finalise, "logs": str(out / WORK / "logs")}
