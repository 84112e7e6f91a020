"""The key store's budgets and in-place updates, through the store and through `gptnl keys`."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from gptnl.cli import app
from gptnl.errors import GptnlError
from gptnl.serving.keys import KeyStore


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"keys": "keys.json",
                                    "models": {"m": {"replicas": 0, "upstreams": ["http://127.0.0.1:1"]},
                                               "n": {"replicas": 0, "upstreams": ["http://127.0.0.1:1"]}}}))
    return path


def keys_cli(*args: str):
    return CliRunner().invoke(app, ["keys", *args])


def test_create_and_update_budgets_from_the_cli(config):
    res = keys_cli("create", "--name", "svc", "--models", "m", "--budget-day", "1000", "--budget-month", "20000",
                   "--budget-soft", "0.8", "--config", str(config))
    assert res.exit_code == 0, res.output
    store = KeyStore(config.parent / "keys.json")
    assert store.lookup(res.stdout.strip().splitlines()[-1]).budget_day == 1000
    res = keys_cli("update", "svc", "--budget-day", "0", "--rpm", "7", "--models", "m,n", "--config", str(config))
    assert res.exit_code == 0, res.output
    (r,) = store.records()
    assert (r.budget_day, r.budget_month, r.budget_soft, r.rpm, r.models) == (None, 20000, 0.8, 7, ["m", "n"])


def test_update_refuses_unknown_and_revoked_keys_and_invalid_values(config):
    store = KeyStore(config.parent / "keys.json")
    store.create("svc", ["m"], 60, 1000)
    with pytest.raises(GptnlError, match="budget_soft"):
        store.update("svc", budget_soft=1.5)
    with pytest.raises(GptnlError, match="cannot change hash"):
        store.update("svc", hash="0" * 64)
    store.revoke("svc")
    with pytest.raises(GptnlError, match="no active key named 'svc'"):
        store.update("svc", rpm=5)
    res = keys_cli("update", "svc", "--config", str(config))
    assert isinstance(res.exception, GptnlError) and "nothing to change" in str(res.exception)
    res = keys_cli("update", "svc", "--models", "x", "--config", str(config))
    assert isinstance(res.exception, GptnlError) and "--models: x" in str(res.exception)


def test_a_key_file_from_before_budgets_still_loads(config):
    (config.parent / "keys.json").write_text(
        '{"keys": [{"name": "old", "hash": "' + "0" * 64 + '", "shown": "gptnl-x…", "models": ["m"], "rpm": 60, '
        '"tpm": 20000, "max_concurrent": 4, "expires": null, "revoked": false, "log_content": false, '
        '"output_guard": true, "metrics": false, "created": "2026-11-28T17:50:16+00:00"}]}')
    (r,) = KeyStore(config.parent / "keys.json").records()
    assert (r.budget_day, r.budget_month, r.budget_soft) == (None, None, None)
