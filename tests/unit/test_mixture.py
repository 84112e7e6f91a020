"""Weighted data mixtures: each source's share is its weight (±1 % over a run, exactly over whole
periods), the order is a pure function of (seed, position), curriculum stages continue each source
where it stopped, and a source that runs out repeats in a new order or refuses the run up front."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import SAMPLE

from gptnl.config import TrainConfig
from gptnl.errors import ConfigError
from gptnl.pack import pack
from gptnl.train.mixture import PERIOD, Mixture, pattern

SOURCES = ("nl", "en", "code")


@pytest.fixture(scope="module")
def three_sets(tmp_path_factory, sample_tokenizer):
    root = tmp_path_factory.mktemp("mix")
    for i, name in enumerate(SOURCES):  # three shard sets of the sample with different splits
        pack(SAMPLE, sample_tokenizer, 32, root / name, val_fraction=0.1 * (i + 1))
    return {name: root / name for name in SOURCES}


def config(sets, weights, **mixture) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": {"dim": 64, "n_layers": 1, "n_heads": 1, "ffn_dim": 128}, "max_steps": mixture.pop("steps", 100),
        "data": {"seed": 3, "mixture": {"sources": [{"name": n, "shards": str(sets[n]), "weight": w}
                                                     for n, w in zip(SOURCES, weights, strict=True)], **mixture}}})


def test_the_pattern_gives_each_source_its_share_spread_evenly():
    owner, rank, counts = pattern([0.6, 0.3, 0.1])
    assert counts.tolist() == [6000, 3000, 1000] and len(owner) == PERIOD
    for d, n in enumerate(counts):
        assert sorted(rank[owner == d].tolist()) == list(range(n))
    prefix = np.cumsum(np.eye(3)[owner], axis=0)  # any prefix is within one slot per source of its share
    assert np.abs(prefix - np.outer(np.arange(1, PERIOD + 1), [0.6, 0.3, 0.1])).max() <= 1.0
    assert pattern([1, 1, 1])[2].tolist() == [3334, 3333, 3333]  # largest remainders, summing to the period


def test_realised_shares_within_one_percent_and_the_order_is_a_pure_function(three_sets):
    cfg = config(three_sets, [0.6, 0.3, 0.1])
    mix = Mixture(cfg, global_batch=16, max_steps=100)
    picks = [mix.locate(p) for p in range(1600)]
    shares = Counter(d for d, _ in picks)
    for d, w in enumerate([0.6, 0.3, 0.1]):
        assert abs(shares[d] / 1600 - w) <= 0.01, shares
    again = Mixture(cfg, global_batch=16, max_steps=100)  # a restarted process
    assert [again.locate(p) for p in (1599, 7, 800)] == [picks[1599], picks[7], picks[800]]
    seen = mix.seen(1600)
    assert [seen[f"tokens_seen/{n}"] // mix.first.seq_len for n in SOURCES] == [shares[0], shares[1], shares[2]]
    x = mix.batch([0, 1, 2])
    assert x.shape == (3, mix.first.seq_len)


def test_a_source_that_runs_out_repeats_in_a_new_order_or_refuses(three_sets):
    cfg = config(three_sets, [0.2, 0.2, 0.6], steps=800)
    mix = Mixture(cfg, global_batch=16, max_steps=800)
    n = len(mix.train[2])
    positions = [p for p in range(16 * 800) if mix.locate(p)[0] == 2]
    assert len(positions) > 2 * n  # the run needs more than two epochs of it
    first, second = ([mix.locate(p)[1] for p in positions[e * n:(e + 1) * n]] for e in (0, 1))
    assert sorted(first) == sorted(second) == list(range(n)) and first != second  # each epoch once, reshuffled
    assert mix.seen(16 * 800)["epoch/code"] >= 2
    with pytest.raises(ConfigError, match=r"mixture source code: the run needs [\d,]+ sequences of it and it has"):
        Mixture(config(three_sets, [0.2, 0.2, 0.6], steps=800, exhausted="refuse"), global_batch=16, max_steps=800)


def test_stages_switch_weights_and_each_source_continues_where_it_stopped(three_sets):
    cfg = config(three_sets, [0.5, 0.5, 0.0], stages=[{"until_step": 10, "weights": {"nl": 1.0}}])
    mix = Mixture(cfg, global_batch=8, max_steps=100)
    early = [mix.locate(p) for p in range(80)]
    assert {d for d, _ in early} == {0}
    late = [mix.locate(p) for p in range(80, 880)]
    assert Counter(d for d, _ in late) == {0: 400, 1: 400}
    nl_order = [i for d, i in early + late if d == 0]
    assert len(nl_order) == 480 < len(mix.train[0]) and len(set(nl_order)) == 480  # continued, not restarted
    assert mix.seen(80)["tokens_seen/nl"] == 80 * mix.first.seq_len and mix.seen(80)["tokens_seen/en"] == 0


@pytest.mark.parametrize(("mixture", "message"), [
    ({"sources": [{"name": "a", "shards": "x", "weight": 1}, {"name": "a", "shards": "y", "weight": 1}]},
     "source names must be unique"),
    ({"sources": [{"name": "a", "shards": "x", "weight": 0}]}, "weights sum to 0"),
    ({"sources": [{"name": "a", "shards": "x", "weight": 1}], "stages": [{"until_step": 5, "weights": {"b": 1}}]},
     "unknown source b"),
])
def test_a_bad_mixture_is_refused_with_the_reason(mixture, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.model_validate({"model": {"dim": 64, "n_layers": 1, "n_heads": 1, "ffn_dim": 128},
                                    "max_steps": 1, "data": {"mixture": mixture}})
