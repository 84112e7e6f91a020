"""The README is what a new user follows: its two set-up commands must be the ones CI and the demo
use, and every `gptnl` command it shows must exist with the options it names."""

from __future__ import annotations

import re
import tomllib

from conftest import ROOT
from typer.testing import CliRunner

from gptnl.cli import app

README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_the_two_commands_are_the_ones_ci_and_the_demo_run():
    first = _blocks("bash")[0].strip().splitlines()
    assert len(first) == 2, "the README starts with exactly two set-up commands"
    demo, tests = first
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command exactly"
    install = tests.removesuffix(" && .venv/bin/python -m pytest")
    assert install != tests and demo == install.replace("'.[test]'", "'.[all]'") + " && .venv/bin/gptnl demo"
    assert "torch==2.13.0" in install  # the CPU wheel first, so no CUDA build is pulled in
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (everything,) = extras["all"]
    named = set(re.fullmatch(r"gptnl\[(.*)\]", everything).group(1).split(","))
    # `bench` holds the benchmarks' peers (spaCy, TRL), which no stage runs
    assert named == set(extras) - {"all", "test", "bench"}, "`all` must install every stage's extra"
    assert "gptnl[all]" in extras["bench"]
    assert "gptnl[all]" in extras["test"]  # the test command installs what the demo needs, and more
    assert 'if [ "$rc" -eq 5 ]' in ci  # pytest's "no tests collected" is reported
    assert "-c constraints.txt" in install  # both install the versions the suite passed with


BOOTSTRAP = ("pip", "setuptools", "wheel")  # the venv's own, which `pip freeze` leaves out
GPTNL_EXTRAS = ("test", "all", "train", "hf", "data", "ray", "finetune", "serve", "eval")  # what `.[test]` pulls in


def test_the_constraints_pin_every_package_this_suite_runs_with():
    """What the test command installed is what constraints.txt says, so the file is the record of
    what passed; a new dependency without a refreshed file fails here (with the package named)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower().replace("_", "-")] = spec.version
    wanted, seen = ["gptnl"], set()
    while wanted:  # gptnl[test]'s whole dependency tree, as installed
        name = wanted.pop()
        dist = metadata.distribution(name)
        extras = set(GPTNL_EXTRAS) if name == "gptnl" else set()
        for raw in dist.requires or []:
            req = Requirement(raw)
            env_ok = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""})
            key = req.name.lower().replace("_", "-")
            if env_ok and key not in seen and key not in ("gptnl", *BOOTSTRAP):
                seen.add(key)
                wanted.append(req.name)
    unpinned = sorted(k for k in seen if k not in pins)
    assert not unpinned, f"not in constraints.txt (bash scripts/refresh-constraints.sh): {unpinned}"
    drift = {k: (metadata.version(k), pins[k]) for k in seen if metadata.version(k).split("+")[0] != pins[k]}
    assert not drift, f"installed vs constraints.txt: {drift}"


def _gptnl_lines() -> list[str]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("gptnl "):
                lines.append(line)
    return lines


def test_every_command_in_the_readme_exists_with_its_options():
    runner = CliRunner()
    lines = _gptnl_lines()
    assert len(lines) > 25
    for line in lines:
        words = line.split()[1:]
        path = []
        for w in words:
            if not re.fullmatch(r"[a-z][a-z-]*", w):
                break
            path.append(w)
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
        # a positional argument that looks like a word (`gptnl eval run`'s none, `slurm logs JOB`) ends the
        # path; walk back until the help exists
        while result.exit_code != 0 and path:
            path.pop()
            result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
        assert path and result.exit_code == 0, line
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
            assert flag in result.output, f"{line}: `gptnl {' '.join(path)}` has no {flag}"
