"""The euroeval-nl suite end to end on its fixtures: every public task is asked of a scripted
OpenAI-compatible server over HTTP and scored, and a model that always prefers the gold answer
scores full marks on each task's primary metric (SQuAD-nl: the reply is the gold answer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_server import ScriptedServer

from gptnl.evals.client import Client
from gptnl.evals.results import ModelInfo, ResultRecord
from gptnl.evals.runner import run_cell
from gptnl.evals.spec import Settings, load_suite
from gptnl.evals.tasks import SUITES_DIR, load_task
from gptnl.public_data import DATA_ENV

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "public"
SUITE = load_suite(SUITES_DIR / "euroeval-nl.yaml")
MODEL = ModelInfo(name="scripted", endpoint="scripted", model_id="scripted", fingerprint="")
FULL_MARKS = {"accuracy": 1.0, "accuracy_norm": 1.0, "mcc": 1.0, "macro_f1": 1.0, "squad_f1": 1.0,
              "bias_adjusted_accuracy": 1.0, "accuracy_disambig": 1.0}


@pytest.fixture(scope="module")
def tasks():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_ENV, str(FIXTURES))
        yield {name: load_task(name) for name in SUITE.tasks}


@pytest.fixture(scope="module")
def oracle(tasks):
    """Log-prob 0 for a prompt ending in a gold continuation, -5 otherwise; replies the gold answer."""
    gold, replies = set(), {}
    for task in tasks.values():
        s = task.spec
        for item in task.items:
            prompt = s.prompt.format(**item)
            if s.type == "generate":
                replies[prompt] = item["answer"][0]
                continue
            choices = item[s.choices] if isinstance(s.choices, str) else s.choices
            answers = item["answer"] if isinstance(item["answer"], list) else [item["answer"]]
            gold |= {prompt + s.target_delimiter + choices[a] for a in answers}
    with ScriptedServer(logprob=lambda p: 0.0 if p in gold else -5.0, reply=lambda p: replies.get(p, "")) as server:
        yield server


@pytest.mark.parametrize("name", SUITE.tasks)
def test_every_public_task_runs_and_an_oracle_scores_full_marks(name, tasks, oracle):
    task = tasks[name]
    record, rows = run_cell(task, Client(oracle.url), MODEL, Settings())
    ResultRecord.model_validate(record)
    assert len(rows) == len(task.items)
    primary = record["metrics"][record["primary"]]["value"]
    if record["primary"] in FULL_MARKS:
        assert primary == pytest.approx(FULL_MARKS[record["primary"]])
    elif record["primary"] == "truthfulqa_mc2":  # the mass on the true answers: all of it, near enough
        assert primary > 0.99
