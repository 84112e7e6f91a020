"""The run config a training run records: a restart with the same model resumes, even when the run
was started by a gptnl whose model config had fewer fields (they take their defaults); another
model, base or mixture is refused."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_MODEL

from gptnl.config import TrainConfig, load_model_config
from gptnl.errors import ConfigError
from gptnl.train.loop import RUN_CONFIG, _record_run_config
from gptnl.train.mixture import Stream


def config(shards, **model) -> TrainConfig:
    m = load_model_config(TINY_MODEL).model_copy(update={"vocab_size": 2048, **model})
    return TrainConfig(model=m, max_steps=4, data={"shards": str(shards)})


def test_a_run_recorded_before_a_model_field_existed_resumes(tmp_path, sample_shards):
    cfg = config(sample_shards)
    stream = Stream(sample_shards, 7)
    _record_run_config(tmp_path, cfg, stream)
    recorded = json.loads((tmp_path / RUN_CONFIG).read_text())
    del recorded["train"]["model"]["rope_scaling"]  # as an earlier gptnl wrote it
    del recorded["train"]["init_from"]
    (tmp_path / RUN_CONFIG).write_text(json.dumps(recorded))
    _record_run_config(tmp_path, cfg, stream)  # no error: the same model
    with pytest.raises(ConfigError, match="holds a run of a different model"):
        _record_run_config(tmp_path, config(sample_shards, n_layers=3), stream)
