"""The `gptnl` command as a user meets it: a subcommand per stage, usage errors without tracebacks."""

import subprocess
import sys


def gptnl(*args):
    return subprocess.run([sys.executable, "-m", "gptnl", *args], capture_output=True, text=True,
                          env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"})


def test_help_lists_every_stage():
    out = gptnl("--help").stdout
    for command in ("tokenizer", "pack", "train", "export", "demo"):
        assert command in out


def test_missing_option_is_a_usage_error():
    proc = gptnl("export", "runs/x")
    assert proc.returncode == 2 and "Missing option '--out'" in proc.stderr and "Traceback" not in proc.stderr


def test_user_error_in_a_stage_is_one_line(tmp_path):
    proc = gptnl("pack", str(tmp_path / "nope"), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "s"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: corpus dir not found"


def test_train_module_entry_point_is_the_same_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gptnl.train", str(tmp_path / "missing.yaml"), "--run-dir", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "config file not found" in proc.stderr
