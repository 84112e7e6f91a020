"""The request contract (effective values, one normalised body), the response normaliser, and the
audit line that cannot fail; in process."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptnl.config import ServedModel
from gptnl.serving import protocol, responses
from gptnl.serving.audit import AuditLog, sanitise_message
from gptnl.serving.protocol import ApiError

M = ServedModel(max_tokens=64, max_model_len=512, replicas=0, upstreams=["http://127.0.0.1:1"])


def plan(body: dict, endpoint: str = "completions") -> protocol.Plan:
    return protocol.plan({"model": "m", **body}, endpoint, M, "m")


def refused(body: dict, endpoint: str = "completions") -> ApiError:
    with pytest.raises(ApiError) as info:
        plan(body, endpoint)
    return info.value


def test_completions_run_max_tokens_and_check_max_completion_tokens_too():
    p = plan({"prompt": "x", "max_completion_tokens": 1, "max_tokens": 40})
    assert p.max_tokens == 40 and p.body["max_tokens"] == 40 and "max_completion_tokens" not in p.body
    assert refused({"prompt": "x", "max_completion_tokens": 1, "max_tokens": 900}).param == "max_tokens"
    assert refused({"prompt": "x", "max_completion_tokens": 900}).param == "max_completion_tokens"
    assert plan({"prompt": "x"}).max_tokens == 16 and plan({"prompt": "x", "max_tokens": None}).max_tokens == 16


def test_chat_runs_max_completion_tokens_first_then_max_tokens_then_the_room_left():
    p = plan({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 3, "max_tokens": 40}, "chat")
    protocol.settle_max_tokens(p, 10, M, "m")
    assert p.max_tokens == 3 and p.body["max_completion_tokens"] == 3 and "max_tokens" not in p.body
    p = plan({"messages": [{"role": "user", "content": "x"}]}, "chat")
    protocol.settle_max_tokens(p, 480, M, "m")
    assert p.max_tokens == 32 and p.body["max_completion_tokens"] == 32
    p = plan({"messages": [{"role": "user", "content": "x"}], "max_tokens": 60}, "chat")
    with pytest.raises(ApiError, match="together over"):
        protocol.settle_max_tokens(p, 480, M, "m")


def test_values_vllm_would_coerce_are_coerced_and_the_rest_refused():
    p = plan({"prompt": "x", "n": 5.0, "max_tokens": "8", "stream": 1})
    assert (p.n, p.body["n"], type(p.body["n"]), p.max_tokens, p.stream) == (5, 5, int, 8, True)
    assert refused({"prompt": "x", "n": 2.5}).param == "n"
    assert refused({"prompt": "x", "n": 0}).param == "n"
    assert refused({"prompt": "x", "max_tokens": -1}).param == "max_tokens"


def test_reservation_counts_every_choice_of_every_prompt():
    p = plan({"prompt": ["a", "b", "c"], "n": 2, "max_tokens": 10})
    assert protocol.reservation(p, [4, 5, 6]) == 15 + 10 * 2 * 3
    p = plan({"prompt": "x", "echo": True, "max_tokens": 0})
    assert protocol.reservation(p, [7]) == 8  # echo with max_tokens=0 still runs one step


def test_sizes_are_refused_before_validation():
    assert refused({"prompt": ["ab"] * 160_000}).param == "prompt"
    assert refused({"messages": [{"role": "user", "content": "x"}] * 2000}, "chat").param == "messages"
    assert refused({"prompt": "x" * (512 * 64 + 1)}).code == "prompt_too_long"
    assert refused({"prompt": "x", "stop": ["a"] * 100}).param == "stop"


def test_a_validation_error_names_the_field_not_its_value():
    err = refused({"prompt": "x", "temperature": "GEHEIM-42"})
    assert err.param == "temperature" and "GEHEIM" not in err.message
    err = refused({"messages": [{"role": 7, "content": "GEHEIM-43"}]}, "chat")
    assert err.param == "messages" and "GEHEIM" not in err.message


def test_extensions_pass_through_and_streams_always_report_usage():
    p = plan({"prompt": "x", "ignore_eos": True, "stream": True, "structured_outputs": {"regex": "a+"}})
    assert p.body["ignore_eos"] is True and p.body["structured_outputs"] == {"regex": "a+"}
    assert p.body["stream_options"] == {"include_usage": True} and not p.client_usage
    assert plan({"prompt": "x", "stream": True, "stream_options": {"include_usage": True}}).client_usage
    assert plan({"prompt": "x", "logprobs": 2, "return_token_ids": True}).token_fields == {"logprobs",
                                                                                            "return_token_ids"}


def test_responses_keep_only_openais_fields_unless_asked():
    data = {"id": "c", "object": "text_completion", "created": 1, "model": "m", "system_fingerprint": "vllm-0.32.0",
            "kv_transfer_params": None, "service_tier": None, "prompt_logprobs": None, "prompt_token_ids": None,
            "choices": [{"index": 0, "text": "a", "logprobs": None, "finish_reason": "length", "stop_reason": None,
                         "token_ids": [1], "prompt_token_ids": None, "routed_experts": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "prompt_tokens_details": None}}
    out = responses.normalise(json.loads(json.dumps(data)), "completions", set())
    assert set(out) == {"id", "object", "created", "model", "choices", "usage"}
    assert set(out["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
    assert out["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    asked = responses.normalise(data, "completions", responses.asked_fields({"return_token_ids": True}))
    assert asked["choices"][0]["token_ids"] == [1]


def test_chat_logprobs_carry_refusal_and_errors_a_string_code():
    data = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "a", "tool_calls": [],
                                                 "reasoning_content": None},
                         "logprobs": {"content": []}, "finish_reason": "stop"}]}
    choice = responses.normalise(data, "chat", set())["choices"][0]
    assert choice["logprobs"] == {"content": [], "refusal": None}
    assert choice["message"] == {"role": "assistant", "content": "a", "refusal": None}
    body, audited = responses.upstream_error(json.dumps({"error": {
        "message": "1 validation error: Input should be 'user' [type=literal_error, input_value={'role': 'bogus', "
                   "'content': 'GEHEIM-44'}]", "type": "BadRequestError", "param": None, "code": 400}}).encode(), 400)
    assert body["error"]["code"] is None and body["error"]["type"] == "BadRequestError"
    assert "GEHEIM" not in audited and audited.startswith("1 validation error")
    assert responses.upstream_error(b"<html>", 502)[0]["error"]["code"] is None


def test_sanitised_upstream_messages_drop_what_they_quote():
    for message in ("Value error, bad [{'type': 'x', 'input': 'GEHEIM'}]", "x input_value='GEHEIM'",
                    'err {"input": "GEHEIM"}', "GEHEIM" * 0 + "Input should be a valid string, got 'GEHEIM'"):
        assert "GEHEIM" not in sanitise_message(message), message
    assert len(sanitise_message("a" * 10_000)) <= 201


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=30)


@given(json_values, st.text())
@settings(max_examples=200, deadline=None)
def test_an_audit_line_is_written_whatever_the_record_holds(value, text):
    line = AuditLog.line({"request_id": "r", "model": text + "\ud800", "error": value, "content": value})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert record["request_id"] == "r" and len(record["model"]) <= 302


def test_an_audit_line_caps_fields_and_nesting(tmp_path):
    deep: list = []
    for _ in range(200):
        deep = [deep]
    log = AuditLog(tmp_path / "audit.jsonl")
    log.write({"request_id": "r", "model": "m" * 500_000, "content": {"request": deep}, "latency_ms": math.nan,
               "status": 200, "odd": object()})
    log.close()
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert len(raw) < 5000 and json.loads(raw)["status"] == 200
