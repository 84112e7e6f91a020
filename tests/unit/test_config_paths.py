"""One path type for every config (`ConfigPath`): a path is relative to the YAML file that names it,
whether it is written in the file, given with `--set`, or is the field's default, and it is absolute
once loaded; the same config read from another working directory names the same files."""

from __future__ import annotations

import os

import yaml
from conftest import ROOT

from gptnl.config import (
    GatewayConfig,
    RecipeConfig,
    load_finetune_config,
    load_gateway_config,
    load_recipe,
    load_train_config,
)
from gptnl.config.base import validate


def _elsewhere(tmp_path, monkeypatch):
    away = tmp_path / "cwd"
    away.mkdir()
    monkeypatch.chdir(away)


def test_recipe_paths_and_defaults_are_relative_to_the_recipe(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "recipes"
    folder.mkdir(parents=True)
    (folder / "r.yaml").write_text(yaml.safe_dump({"blocklist": "lists/block.txt", "count_tokens_with": "../tok",
                                                    "pii": {"ner": {"kind": "hf", "path": "ner-model"}}}))
    _elsewhere(tmp_path, monkeypatch)
    r = load_recipe(folder / "r.yaml")
    assert r.blocklist == folder / "lists" / "block.txt" and r.count_tokens_with == tmp_path / "project" / "tok"
    assert r.pii.ner.path == folder / "ner-model"
    # defaults are paths like any other: relative to the recipe, not to where gptnl runs
    assert r.sources == tmp_path / "project" / "sources.yaml" and r.licences == tmp_path / "project" / "licences.yaml"
    assert r.decontamination.tasks == tmp_path / "evals" / "tasks"


def test_a_config_built_in_code_keeps_its_paths_as_given():
    assert RecipeConfig().sources.as_posix() == "../sources.yaml"
    assert validate(RecipeConfig, {"sources": "s.yaml"}, "x").sources.as_posix() == "s.yaml"


def test_train_shards_init_from_and_overrides_are_relative_to_the_config(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "t.yaml").write_text(yaml.safe_dump({
        "model": str(ROOT / "configs" / "model" / "tiny.yaml"), "max_steps": 2, "init_from": "../bases/b",
        "data": {"shards": "packed"}}))
    _elsewhere(tmp_path, monkeypatch)
    cfg = load_train_config(conf / "t.yaml")
    assert cfg.data.shards == conf / "packed" and cfg.init_from == tmp_path / "bases" / "b"
    moved = load_train_config(conf / "t.yaml", ["data.shards=other", "init_from=/abs/base"])
    assert moved.data.shards == conf / "other" and str(moved.init_from) == "/abs/base"
    mix = load_train_config(conf / "t.yaml", ["data.shards=null", "data.mixture={sources: [{name: a, shards: s/a, "
                                              "weight: 1}]}"])
    assert mix.data.mixture.sources[0].shards == conf / "s" / "a"


def test_finetune_gates_default_to_the_shipped_files_from_any_folder(tmp_path, monkeypatch):
    _elsewhere(tmp_path, monkeypatch)
    cfg = load_finetune_config(ROOT / "configs" / "finetune" / "tiny-sft.yaml")
    assert cfg.data.licences == (ROOT / "data_pipeline" / "licences.yaml").resolve() and cfg.data.licences.is_file()
    assert cfg.data.decontamination.tasks is None or cfg.data.decontamination.tasks.is_dir()


def test_gateway_paths_are_relative_to_the_file_but_the_interpreter_is_not_resolved(tmp_path, monkeypatch):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", tmp_path / "venv" / "bin" / "python")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({
        "vllm_python": "venv/bin/python", "models": {"m": {"path": "models/m", "replicas": 1}}}))
    _elsewhere(tmp_path, monkeypatch)
    cfg = load_gateway_config(tmp_path / "g.yaml", check_models=False)
    assert isinstance(cfg, GatewayConfig)
    assert (cfg.keys, cfg.audit, cfg.profiles) == (tmp_path / "keys.json", tmp_path / "audit.jsonl",
                                                   tmp_path / "profiles")
    assert cfg.models["m"].path == tmp_path / "models" / "m"
    assert cfg.vllm_python == tmp_path / "venv" / "bin" / "python"  # the venv's link, not /usr/bin/python3
