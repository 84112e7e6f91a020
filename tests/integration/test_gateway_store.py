"""Limits shared between gateways through a real Valkey/Redis, and budgets across a gateway restart.

The store server is Debian's valkey-server or redis-server, installed if missing and started on
127.0.0.1 by the project's own scripts/valkey-local.sh, and stopped afterwards. The gateways are real
`gptnl serve` processes. Their upstream is a plain local HTTP server that speaks the OpenAI completion
shape (with `usage`) and answers /health, not vLLM: what is under test is limit arithmetic across
processes, which does not depend on the model; a real vLLM adds minutes and nothing to check here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gptnl.serving.keys import KeyRecord
from gptnl.serving.limits import Limiter, Refused, limits_of
from gptnl.serving.replicas import free_port
from gptnl.serving.store import MemoryStore, RedisStore

SCRIPT = ROOT / "scripts" / "valkey-local.sh"
MODEL = "m"
USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}


@pytest.fixture(scope="module")
def valkey(tmp_path_factory):
    """redis://127.0.0.1:PORT/0 of a server started by scripts/valkey-local.sh, stopped after the module."""
    port, data = free_port(), tmp_path_factory.mktemp("valkey")
    res = subprocess.run(["bash", str(SCRIPT), "start", str(port), str(data)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"scripts/valkey-local.sh start failed:\n{res.stderr[-3000:]}"
    yield f"redis://127.0.0.1:{port}/0"
    subprocess.run(["bash", str(SCRIPT), "stop", str(port), str(data)], capture_output=True, timeout=60)


class Upstream(BaseHTTPRequestHandler):
    """OpenAI's completion shape with a fixed `usage`; `delay` seconds of service time per answer."""

    delay = 0.0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._send({"status": "ok"})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        self._send({"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": MODEL,
                    "choices": [{"index": 0, "text": " ja", "logprobs": None, "finish_reason": "length"}],
                    "usage": USAGE})

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptnl", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250"})


def write_config(folder: Path, upstream: str, store: str | None = None, keys: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"port": free_port(), "keys": str(keys or folder / "keys.json"), "audit": "audit.jsonl", "logs": "logs",
           "health_interval_s": 0.5, "models": {MODEL: {"max_tokens": 64, "max_model_len": 512, "replicas": 0,
                                                        "upstreams": [upstream]}}}
    if store:
        cfg["store"] = {"url": store, "prefix": f"t{uuid.uuid4().hex[:8]}", "lease_ttl_s": 10}
    (folder / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "gateway.yaml"


def new_key(config: Path, name: str, *flags: str) -> str:
    res = cli("keys", "create", "--config", str(config), "--name", name, "--models", MODEL, *flags)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


class Gateway:
    def __init__(self, config: Path):
        self.config = config
        self.url = f"http://127.0.0.1:{yaml.safe_load(config.read_text())['port']}"
        self.log = config.parent / "gateway.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "gptnl", "serve", str(config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not come up:\n" + self.log.read_text()[-4000:]
            time.sleep(0.2)

    def complete(self, key: str) -> httpx.Response:
        return httpx.post(self.url + "/v1/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                          json={"model": MODEL, "prompt": "Hallo", "max_tokens": 20})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def code(r: httpx.Response) -> str | None:
    return r.json()["error"]["code"] if r.status_code != 200 else None


@pytest.fixture(scope="module")
def pair(tmp_path_factory, valkey, upstream):
    """Two gateways on one store, each with its own copy of the key file (as on two machines)."""
    base = tmp_path_factory.mktemp("pair")
    one = write_config(base / "one", upstream, valkey)
    store = yaml.safe_load(one.read_text())["store"]
    keys = {"rpm": new_key(one, "rpm", "--rpm", "5", "--max-concurrent", "8"),
            "single": new_key(one, "single", "--max-concurrent", "1"),
            "leaver": new_key(one, "leaver")}
    two = write_config(base / "two", upstream, valkey)
    cfg2 = yaml.safe_load(two.read_text())
    (two.write_text(yaml.safe_dump(cfg2 | {"store": store})))
    shutil.copy(base / "one" / "keys.json", base / "two" / "keys.json")
    gateways = [Gateway(one), Gateway(two)]
    yield gateways, keys
    for g in gateways:
        g.stop()


def test_two_gateways_give_a_key_its_rpm_once(pair):
    (one, two), keys = pair
    answers = [(one if i % 2 else two).complete(keys["rpm"]) for i in range(12)]
    assert [r.status_code for r in answers].count(200) == 5, [r.text for r in answers]
    refused = [r for r in answers if r.status_code != 200]
    assert all(r.status_code == 429 and code(r) == "rate_limit_exceeded" for r in refused)
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)


def test_a_request_in_flight_on_one_gateway_holds_the_slot_on_the_other(pair):
    (one, two), keys = pair
    Upstream.delay = 3.0
    try:
        slow = threading.Thread(target=one.complete, args=(keys["single"],))
        slow.start()
        time.sleep(1.0)  # the slow request is in flight on gateway one
        r = two.complete(keys["single"])
        slow.join()
    finally:
        Upstream.delay = 0.0
    assert r.status_code == 429 and "in flight" in r.json()["error"]["message"]
    assert two.complete(keys["single"]).status_code == 200  # given back when it ended


def test_a_key_revoked_through_one_config_is_refused_by_every_gateway(pair):
    (one, two), keys = pair
    assert two.complete(keys["leaver"]).status_code == 200
    res = cli("keys", "revoke", "leaver", "--config", str(one.config))
    assert res.returncode == 0 and "shared store" in res.stdout, res.stderr
    assert json.loads((two.config.parent / "keys.json").read_text())["keys"][2]["revoked"] is False
    r = two.complete(keys["leaver"])  # its own key file still says active
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


@pytest.mark.parametrize("shared", [False, True], ids=["memory-from-audit", "valkey"])
def test_a_day_budget_holds_across_a_gateway_restart(tmp_path, valkey, upstream, shared):
    config = write_config(tmp_path, upstream, valkey if shared else None)
    key = new_key(config, "budget", "--budget-day", "100", "--budget-soft", "0.8")
    g = Gateway(config)
    try:
        answers = []
        for _ in range(10):
            answers.append(g.complete(key))
            if answers[-1].status_code != 200:
                break
        ok = [r for r in answers if r.status_code == 200]
        assert len(ok) == 3, [r.text for r in answers]  # 30 tokens used each; a 4th may need 20 more
        assert "x-gptnl-budget-warning" not in ok[0].headers  # the warning counts the request's reservation
        assert "day budget" in ok[2].headers["x-gptnl-budget-warning"]
        assert code(answers[-1]) == "budget_exceeded" and "resets at" in answers[-1].json()["error"]["message"]
    finally:
        g.stop()
    g = Gateway(config)
    try:
        r = g.complete(key)
        assert r.status_code == 429 and code(r) == "budget_exceeded", r.text
        assert "90 of its 100" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
        assert cli("keys", "update", "budget", "--budget-day", "0", "--config", str(config)).returncode == 0
        assert g.complete(key).status_code == 200  # the budget lifted without a restart
    finally:
        g.stop()


def test_a_killed_gateways_lease_expires(valkey):
    store = RedisStore(valkey, prefix=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=5)
    k = KeyRecord(name="k", hash="0" * 64, shown="x", models=[MODEL], rpm=100, tpm=10_000, max_concurrent=1,
                  created="x")
    clock = [time.time()]
    limiter = Limiter(store, clock=lambda: clock[0])

    async def run():
        await store.admit(k.name, limits_of(k), 1, clock[0])  # a lease whose gateway died: never released
        with pytest.raises(Refused):
            async with limiter.hold(k, 1):
                pass
        clock[0] += 6
        async with limiter.hold(k, 1):
            pass
        await store.aclose()
    asyncio.run(run())


def test_an_unreachable_store_refuses_with_503():
    k = KeyRecord(name="k", hash="0" * 64, shown="x", models=[MODEL], rpm=1, tpm=1, created="x")
    limiter = Limiter(RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5))

    async def run():
        async with limiter.hold(k, 1):
            pass
    with pytest.raises(Refused) as info:
        asyncio.run(run())
    assert (info.value.status, info.value.code) == (503, "store_unavailable")


OPS = st.lists(st.tuples(st.sampled_from([0, 0, 0, 1, 7, 30, 59, 61, 3600, 86400]),
                         st.one_of(st.integers(0, 5), st.integers(0, 120)),
                         st.one_of(st.none(), st.integers(0, 150)), st.booleans()), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
@example(ops=[(0, 1, None, False)] * 7 + [(30, 1, None, False), (31, 1, None, False)])  # rpm
@example(ops=[(0, 100, None, False), (10, 100, 20, False), (10, 100, None, False), (5, 100, None, False),
              (0, 301, None, False)])  # tpm
@example(ops=[(0, 120, 150, True), (0, 120, 150, True), (0, 5, None, True), (0, 5, None, False)])  # slots
@example(ops=[(61, 120, 150, False)] * 7 + [(3600, 120, None, False), (86400, 120, None, False)] * 2)  # budgets
@example(ops=[(61, 100, 100, False)] * 10 + [(86400, 100, None, False)] + [(61, 100, 100, False)] * 12)  # exact
def test_the_shared_store_answers_as_the_memory_store_does(valkey, ops):
    """Random request sequences (time steps, reservations, settlements, requests left open) get the same
    admissions, refusals, retry_after and headers from Valkey/Redis as from memory."""
    k = KeyRecord(name="svc:1", hash="0" * 64, shown="x", models=[MODEL], rpm=6, tpm=300, max_concurrent=3,
                  budget_day=900, budget_month=2000, budget_soft=0.5, created="x")

    async def trace(store) -> list:
        clock = [2_000_000_000.0]
        limiter, out, open_ = Limiter(store, clock=lambda: clock[0]), [], []
        for step, tokens, used, keep_open in ops:
            clock[0] += step
            try:
                held = limiter.hold(k, tokens)
                lease = await held.__aenter__()
                lease.settle(used)
                out.append(("ok", lease.headers))
                if keep_open and len(open_) < 2:
                    open_.append(held)
                else:
                    await held.__aexit__(None, None, None)
            except Refused as r:
                out.append((r.code, r.retry_after, str(r)))
        for held in open_:
            await held.__aexit__(None, None, None)
        await store.aclose()
        return out

    shared = RedisStore(valkey, prefix=f"t{uuid.uuid4().hex[:8]}", lease_ttl_s=10 ** 9)
    assert asyncio.run(trace(shared)) == asyncio.run(trace(MemoryStore()))
