"""`--set section.key=value` for `gptnl train` and `gptnl finetune`: the value is read as YAML and
applied before validation, so a typo gets the file's own error, naming the field and what it allows."""

from __future__ import annotations

import pytest
from conftest import ROOT

from gptnl.config import apply_overrides, load_finetune_config, load_train_config
from gptnl.errors import ConfigError

TRAIN = ROOT / "configs" / "train" / "tiny-cpu.yaml"
SFT = ROOT / "configs" / "finetune" / "tiny-sft.yaml"


def test_values_are_read_as_yaml_and_sections_are_created():
    data = {"optim": {"lr": 0.1}, "max_steps": 5}
    out = apply_overrides(data, ["optim.lr=3e-4", "max_steps=20", "eval.tasks=[kennis, taal]", "seed=null",
                                 "name=a=b"])
    assert out == {"optim": {"lr": 3e-4}, "max_steps": 20, "eval": {"tasks": ["kennis", "taal"]}, "seed": None,
                   "name": "a=b"}
    assert data == {"optim": {"lr": 0.1}, "max_steps": 5}  # the caller's mapping is left alone


def test_train_config_takes_overrides_into_its_model_file():
    base = load_train_config(TRAIN)
    cfg = load_train_config(TRAIN, ["model.n_layers=3", "optim.lr=0.002", "batch.micro_batch_size=1"])
    assert (cfg.model.n_layers, cfg.optim.lr, cfg.batch.micro_batch_size) == (3, 0.002, 1)
    assert cfg.model.dim == base.model.dim and cfg.max_steps == base.max_steps


@pytest.mark.parametrize(("item", "message"), [
    ("optim.lrr=1", "optim.lrr: unknown field; allowed: lr"),
    ("max_steps=many", "max_steps: Input should be a valid integer"),
    ("max_steps", "expected section.key=value"),
    ("optim..lr=1", "expected section.key=value"),
    ("max_steps.x=1", "max_steps is a value, not a section"),
    ("optim.lr=[1", "the value is not valid YAML"),
])
def test_a_bad_override_names_itself_and_the_field(item, message):
    with pytest.raises(ConfigError) as err:
        load_train_config(TRAIN, [item])
    assert message in str(err.value)
    if "unknown field" in message or "valid integer" in message:
        assert str(err.value).startswith(f"{TRAIN} (with --set {item}): ")


def test_finetune_config_takes_overrides_and_keeps_resolving_paths():
    cfg = load_finetune_config(SFT, ["optim.lr=5e-4", "lora.r=4"])
    assert cfg.optim.lr == 5e-4 and cfg.lora.r == 4
    assert cfg.data.licences.is_absolute() and cfg.data.licences.is_file()


def test_the_cli_passes_set_and_the_shorthands(tmp_path, capsys):
    from gptnl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", str(TRAIN), "--run-dir", str(tmp_path / "run"), "--set", "optim.warmup_stepz=3",
              "--max-steps", "2"])
    err = capsys.readouterr().err.replace("\n", "")
    assert exit_.value.code == 2 and "(with --set optim.warmup_stepz=3, max_steps=2)" in err
    assert "optim.warmup_stepz: unknown field; allowed: lr" in err and not (tmp_path / "run").exists()
