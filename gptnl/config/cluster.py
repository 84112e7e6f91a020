"""Slurm cluster profiles: partitions and the resources each job kind asks for."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from gptnl.config.base import Strict, read_yaml, validate

_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(value: str) -> int:
    """Seconds in a Slurm time string (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`)."""
    m = _SLURM_TIME.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a Slurm time (e.g. 30, 04:00:00, 5-00:00:00)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is None:  # MM, MM:SS, HH:MM:SS
        h, mi, s = (0, a, b or 0) if c is None else (a, b, c)
    else:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, mi, s = a, b or 0, c or 0
    return (days or 0) * 86400 + h * 3600 + mi * 60 + s


class PartitionProfile(Strict):
    """One partition's node shape and limits, as the site documents them."""

    cpus_per_node: int = Field(gt=0)
    mem_gb_per_node: float = Field(gt=0, description="memory a job may use on one node")
    gpus_per_node: int = Field(default=0, ge=0)
    gpu_type: str | None = None
    max_time: str = Field(description="partition time limit, Slurm format, e.g. 5-00:00:00")

    @model_validator(mode="after")
    def _time(self) -> PartitionProfile:
        slurm_time_seconds(self.max_time)
        return self


class DataJobProfile(Strict):
    """Resources of each task of a corpus-pipeline array job."""

    partition: str
    cpus_per_task: int = Field(default=1, gt=0)
    mem_gb_per_cpu: float = Field(default=2, gt=0)
    time: str = "04:00:00"
    max_array_size: int = Field(default=1001, gt=0, description="the site's MaxArraySize")


class TrainJobProfile(Strict):
    """Defaults of a training job: one task per GPU (or per process on CPU nodes)."""

    partition: str
    time: str = "01:00:00"
    tasks_per_node: int | None = Field(default=None, gt=0, description="null: the partition's GPUs per node")
    cpus_per_task: int | None = Field(default=None, gt=0, description="null: the node's CPUs shared by its tasks")
    grace_s: int = Field(default=300, ge=0, description=(
        "SIGUSR1 this long before the time limit: checkpoint and requeue; 0: no warning signal"))
    max_restarts: int = Field(default=5, ge=0, description="requeues after a signal before the job gives up")


class RayJobProfile(Strict):
    """Defaults of a Ray job (evaluation sweeps): a head on the first node, workers on the rest."""

    partition: str
    time: str = "04:00:00"
    tasks_per_node: int = Field(default=1, gt=0, description="Ray nodes per Slurm node (more than one: tests)")
    cpus_per_task: int | None = Field(default=None, gt=0, description="null: the node's CPUs shared by its tasks")


class ClusterProfile(Strict):
    """`slurm/clusters/*.yaml`: what a site's Slurm offers and how a job sets up its environment."""

    name: str
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    partitions: dict[str, PartitionProfile] = Field(min_length=1)
    setup: list[str] = Field(default_factory=list, description=(
        "shell lines run at the start of every job (module loads, venv activation); "
        "empty: activate the Python environment gptnl was submitted from"))
    scratch: str | None = Field(default=None, description="where runs, logs and checkpoints go on the cluster")
    env: dict[str, str] = Field(default_factory=dict, description=(
        "variables exported in training and Ray jobs, e.g. NCCL_SOCKET_IFNAME for a site's network"))
    data: DataJobProfile
    train: TrainJobProfile | None = None
    ray: RayJobProfile | None = None

    @model_validator(mode="after")
    def _data_fits(self) -> ClusterProfile:
        for name in ("train", "ray"):
            job = getattr(self, name)
            if job is not None and job.partition not in self.partitions:
                raise ValueError(f"{name}.partition {job.partition!r} is not among partitions "
                                 f"({', '.join(self.partitions)})")
        part = self.partitions.get(self.data.partition)
        if part is None:
            raise ValueError(f"data.partition {self.data.partition!r} is not among partitions "
                             f"({', '.join(self.partitions)})")
        if self.data.cpus_per_task > part.cpus_per_node:
            raise ValueError(f"data.cpus_per_task {self.data.cpus_per_task} is more than a {self.data.partition} "
                             f"node has ({part.cpus_per_node})")
        if self.data.cpus_per_task * self.data.mem_gb_per_cpu > part.mem_gb_per_node:
            raise ValueError(f"data: {self.data.cpus_per_task} CPUs x {self.data.mem_gb_per_cpu} GB is more memory "
                             f"than a {self.data.partition} node has ({part.mem_gb_per_node} GB)")
        if slurm_time_seconds(self.data.time) > slurm_time_seconds(part.max_time):
            raise ValueError(f"data.time {self.data.time} is above the {self.data.partition} limit {part.max_time}")
        return self


def load_cluster(path: Path) -> ClusterProfile:
    return validate(ClusterProfile, read_yaml(path), str(path))
