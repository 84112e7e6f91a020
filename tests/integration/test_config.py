"""Config loading: every mistake names the file, the field and what is allowed."""

import subprocess
import sys

import pytest
from conftest import ROOT, TINY_MODEL

from gptnl.config import load_cluster, load_model_config, load_train_config, slurm_time_seconds
from gptnl.errors import ConfigError


def write(tmp_path, text, name="train.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_configs_validate():
    for path in sorted((ROOT / "configs" / "model").glob("*.yaml")):
        load_model_config(path)
    for path in sorted((ROOT / "configs" / "train").glob("*.yaml")):
        cfg = load_train_config(path)
        assert cfg.model.dim > 0 if cfg.model else cfg.init_from.is_absolute()  # continue-*: read from the base
    for path in sorted((ROOT / "slurm" / "clusters").glob("*.yaml")):
        assert load_cluster(path).partitions


def test_bad_zero_stage_names_field_and_allowed_values(tmp_path):
    p = write(tmp_path, f"model: {TINY_MODEL}\nmax_steps: 10\nzero_stage: 5\n")
    with pytest.raises(ConfigError) as exc:
        load_train_config(p)
    msg = str(exc.value)
    assert str(p) in msg and "zero_stage" in msg and "0, 1, 2 or 3" in msg and "got 5" in msg


def test_unknown_field_lists_allowed_fields(tmp_path):
    p = write(tmp_path, f"model: {TINY_MODEL}\nmax_steps: 10\noptim:\n  gradient_clip: 0.5\n")
    with pytest.raises(ConfigError) as exc:
        load_train_config(p)
    msg = str(exc.value)
    assert "optim.gradient_clip" in msg and "unknown field" in msg and "grad_clip" in msg


def test_wrong_type_and_missing_field(tmp_path):
    p = write(tmp_path, f"model: {TINY_MODEL}\noptim:\n  lr: fast\n")
    with pytest.raises(ConfigError) as exc:
        load_train_config(p)
    msg = str(exc.value)
    assert "optim.lr" in msg and "'fast'" in msg
    assert "max_steps: required field is missing" in msg


def test_model_constraints_are_checked(tmp_path):
    p = write(tmp_path, "dim: 100\nn_layers: 2\nn_heads: 3\nffn_dim: 10\n", "model.yaml")
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        load_model_config(p)


def test_missing_model_file_named(tmp_path):
    p = write(tmp_path, "model: nowhere.yaml\nmax_steps: 3\n")
    with pytest.raises(ConfigError, match="model: file nowhere.yaml not found"):
        load_train_config(p)


def test_invalid_yaml_names_line(tmp_path):
    p = write(tmp_path, "model: x\nmax_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"line \d+ is not valid YAML"):
        load_train_config(p)


def test_cli_prints_one_red_line_and_exits_2(tmp_path):
    p = write(tmp_path, f"model: {TINY_MODEL}\nmax_steps: 10\nzero_stage: 7\n")
    proc = subprocess.run([sys.executable, "-m", "gptnl", "train", str(p), "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "zero_stage" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_debug_shows_traceback(tmp_path):
    p = write(tmp_path, f"model: {TINY_MODEL}\nmax_steps: 10\nzero_stage: 7\n")
    proc = subprocess.run([sys.executable, "-m", "gptnl", "--debug", "train", str(p), "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


@pytest.mark.parametrize("value, seconds", [("30", 1800), ("30:15", 1815), ("04:00:00", 14400),
                                            ("5-00:00:00", 432000), ("1-02", 93600), ("1-02:03", 93780)])
def test_slurm_time_formats(value, seconds):
    assert slurm_time_seconds(value) == seconds


CLUSTER = """name: c
partitions:
  cpu: {cpus_per_node: 4, mem_gb_per_node: 8, max_time: "1-00:00:00"}
data: {partition: %s, cpus_per_task: %d, mem_gb_per_cpu: %s, time: "%s"}
"""


@pytest.mark.parametrize("args, needle", [
    (("gpu", 1, 1, "01:00:00"), "data.partition 'gpu' is not among partitions (cpu)"),
    (("cpu", 8, 1, "01:00:00"), "data.cpus_per_task 8 is more than a cpu node has (4)"),
    (("cpu", 4, 4, "01:00:00"), "more memory than a cpu node has (8.0 GB)"),
    (("cpu", 1, 1, "2-00:00:00"), "data.time 2-00:00:00 is above the cpu limit 1-00:00:00"),
    (("cpu", 1, 1, "soon"), "'soon' is not a Slurm time"),
])
def test_cluster_profile_refuses_what_the_partition_cannot_give(tmp_path, args, needle):
    p = write(tmp_path, CLUSTER % args, "cluster.yaml")
    with pytest.raises(ConfigError) as exc:
        load_cluster(p)
    assert str(p) in str(exc.value) and needle in str(exc.value)
