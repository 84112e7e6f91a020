"""The rerun guard the corpus build, pre-training and fine-tuning share: the first start records the
settings, a rerun with the same ones goes on, another one is refused with the sentence that says
what differs (the first that applies), and the record is not rewritten by a refused rerun."""

from __future__ import annotations

import json

import pytest

from gptnl.errors import ConfigError
from gptnl.run_record import differs_in, same_run_or_refuse


def test_first_start_writes_the_record_and_a_same_rerun_returns_it(tmp_path):
    path = tmp_path / "run" / "config.json"
    current = {"config": {"lr": 1e-3}, "data": "/d"}
    assert same_run_or_refuse(path, current, differs_in(current, "other")) is None
    assert json.loads(path.read_text()) == current
    assert same_run_or_refuse(path, current, differs_in(current, "other")) == current


def test_a_difference_is_refused_with_its_sentence_and_the_record_kept(tmp_path):
    path = tmp_path / "config.json"
    same_run_or_refuse(path, {"config": {"lr": 1e-3}, "data": "/d"}, [])
    changed = {"config": {"lr": 2e-3}, "data": "/d"}
    with pytest.raises(ConfigError, match="^run holds another config$"):
        same_run_or_refuse(path, changed, differs_in(changed, "run holds another config"))
    assert json.loads(path.read_text())["config"] == {"lr": 1e-3}


def test_keys_the_record_lacks_count_as_different_and_the_first_refusal_wins(tmp_path):
    path = tmp_path / "config.json"
    same_run_or_refuse(path, {"model": "a"}, [])
    with pytest.raises(ConfigError, match="^model$"):
        same_run_or_refuse(path, {"model": "b", "tokenizer": "t"}, [
            lambda saved: "model" if saved["model"] != "b" else None,
            differs_in({"tokenizer": "t"}, "tokenizer"),
        ])
    with pytest.raises(ConfigError, match="^tokenizer$"):
        same_run_or_refuse(path, {"model": "a", "tokenizer": "t"}, [
            lambda saved: None, differs_in({"tokenizer": "t"}, "tokenizer")])
