"""The chat template with tools (Hermes-style calls for vLLM's `hermes` parser) and the loss mask
over tool conversations; conversations without tools render exactly as they did before tools."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from gptnl.finetune.conversations import data_files, parse_line

INSTRUCTIONS = ROOT / "data_pipeline" / "instructions"
# The files that existed before tool conversations were added: their rendering is pinned.
PLAIN_FILES = ("burgervragen.jsonl", "gesprekken.jsonl", "herschrijven.jsonl", "weigeren.jsonl")

# The template as it was before tools, verbatim: SFT runs on conversations without tools must see the
# same text (and so the same tokens and loss) with the new one.
TEMPLATE_BEFORE_TOOLS = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' ~ message['role'] ~ '; allowed: system, user, assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] ~ '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' ~ message['role'] ~ '|>\n' ~ message['content'] ~ '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def hf_tokenizer(sample_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(sample_tokenizer)


def shipped_plain() -> list[list[dict]]:
    convs = []
    for path in data_files(INSTRUCTIONS):
        if path.name in PLAIN_FILES:
            for n, line in enumerate(path.read_bytes().splitlines(), 1):
                conv = parse_line(line, f"{path.name}:{n}")
                assert not isinstance(conv, str), conv
                convs.append(conv.messages)
    return convs


def test_conversations_without_tools_render_as_before(hf_tokenizer):
    convs = shipped_plain()
    assert len(convs) == 330
    for messages in convs:
        for k in range(1, len(messages) + 1):
            for gen in (False, True):
                now = hf_tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=gen)
                before = hf_tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=gen,
                                                          chat_template=TEMPLATE_BEFORE_TOOLS)
                assert now == before


def test_plain_rendering_is_pinned_literally(hf_tokenizer):
    messages = [{"role": "system", "content": "Wees kort."}, {"role": "user", "content": "Hoi"},
                {"role": "assistant", "content": "Dag!"}]
    text = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text == "<s><|system|>\nWees kort.<|end|>\n<|user|>\nHoi<|end|>\n<|assistant|>\nDag!<|end|>\n"
    prompt = hf_tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s><|system|>\nWees kort.<|end|>\n<|user|>\nHoi<|end|>\n<|assistant|>\n"
    # an empty tools list is no tools: the same text
    assert hf_tokenizer.apply_chat_template(messages, tools=[], tokenize=False) == text


def test_plain_loss_mask_is_unchanged(hf_tokenizer):
    from gptnl.finetune.render import ChatRenderer

    r = ChatRenderer(hf_tokenizer)
    for messages in shipped_plain()[::37]:
        enc = r.encode(messages)
        masked = hf_tokenizer.decode([i for i, m in zip(enc.ids, enc.mask, strict=True) if m])
        assert masked == "".join(m["content"] + "<|end|>" for m in messages if m["role"] == "assistant")
        assert enc.ids == list(hf_tokenizer(hf_tokenizer.apply_chat_template(
            messages, tokenize=False, chat_template=TEMPLATE_BEFORE_TOOLS), add_special_tokens=False)["input_ids"])


def test_shipped_files_are_json_lines():
    for path in data_files(INSTRUCTIONS):
        for line in path.read_text().splitlines():
            assert isinstance(json.loads(line), dict)


# --- tools ---------------------------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {
    "name": "afvalkalender", "description": "Ophaaldagen van afval op een adres",
    "parameters": {"type": "object", "properties": {"postcode": {"type": "string"}, "huisnummer": {"type": "integer"}},
                   "required": ["postcode", "huisnummer"]}}}]
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "afvalkalender", "arguments": "{\"postcode\": \"9999 XX\", \"huisnummer\": 12}"}}
RESULT = "{\"gft\": \"dinsdag 8 december\", \"restafval\": \"vrijdag 11 december\"}"
ANSWER = "Uw groene container wordt dinsdag 8 december geleegd, de grijze vrijdag 11 december."
TOOL_CONV = {"id": "t1", "source": "s", "licence": "CC0-1.0", "tools": TOOLS, "messages": [
    {"role": "system", "content": "Je bent de assistent van gemeente Zuiderveen."},
    {"role": "user", "content": "Wanneer wordt mijn afval opgehaald? Postcode 9999 XX, nummer 12."},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": RESULT},
    {"role": "assistant", "content": ANSWER}]}


def parsed(obj: dict):
    conv = parse_line(json.dumps(obj).encode(), "x.jsonl:1")
    assert not isinstance(conv, str), conv
    return conv


def test_tool_conversation_renders_in_the_hermes_format(hf_tokenizer):
    from gptnl.finetune.render import ChatRenderer

    conv = parsed(TOOL_CONV)
    text = ChatRenderer(hf_tokenizer).text(conv.messages, tools=conv.tools)
    system, rest = text.split("<|end|>\n", 1)
    assert system.startswith("<s><|system|>\nJe bent de assistent van gemeente Zuiderveen.\n\n# Functies")
    listed = system.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(listed) == TOOLS[0]["function"]
    call = ('<|assistant|>\n<tool_call>\n{"name": "afvalkalender", "arguments": {"postcode": "9999 XX", '
            '"huisnummer": 12}}\n</tool_call><|end|>\n')
    response = f'<|user|>\n<tool_response name="afvalkalender">\n{RESULT}\n</tool_response><|end|>\n'
    assert rest == ("<|user|>\nWanneer wordt mijn afval opgehaald? Postcode 9999 XX, nummer 12.<|end|>\n"
                    + call + response + f"<|assistant|>\n{ANSWER}<|end|>\n")


def test_hermes_parser_pattern_reads_the_rendered_call(hf_tokenizer):
    """The regex and JSON reading of vLLM's hermes parser (tool_parsers/hermes_tool_parser.py) on our call."""
    import re

    from gptnl.finetune.render import ChatRenderer

    conv = parsed(TOOL_CONV)
    full, spans = ChatRenderer(hf_tokenizer).spans(conv.messages, conv.tools)
    said = full[spans[0][0]:spans[0][1]]
    found = re.findall(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", said, re.DOTALL)
    calls = [json.loads(a or b) for a, b in found]
    assert calls == [{"name": "afvalkalender", "arguments": {"postcode": "9999 XX", "huisnummer": 12}}]


def test_loss_covers_tool_calls_and_answers_not_tool_results(hf_tokenizer):
    from gptnl.finetune.render import ChatRenderer

    conv = parsed(TOOL_CONV)
    enc = ChatRenderer(hf_tokenizer).encode(conv.messages, conv.tools)
    masked = hf_tokenizer.decode([i for i, m in zip(enc.ids, enc.mask, strict=True) if m])
    assert masked == ('<tool_call>\n{"name": "afvalkalender", "arguments": {"postcode": "9999 XX", "huisnummer": 12}}'
                      f'\n</tool_call><|end|>{ANSWER}<|end|>')
    unmasked = hf_tokenizer.decode([i for i, m in zip(enc.ids, enc.mask, strict=True) if not m])
    assert RESULT in unmasked and "<tools>" in unmasked and "dinsdag 8 december" not in masked.split("<|end|>")[0]
    hf = hf_tokenizer.apply_chat_template(conv.messages, tools=conv.tools, return_assistant_tokens_mask=True,
                                          return_dict=True)
    assert hf["input_ids"] == enc.ids and [bool(m) for m in hf["assistant_masks"]] == enc.mask


def test_serving_prompt_after_a_tool_result_is_the_training_prefix(hf_tokenizer):
    from gptnl.finetune.render import ChatRenderer

    conv = parsed(TOOL_CONV)
    r = ChatRenderer(hf_tokenizer)
    full, spans = r.spans(conv.messages, conv.tools)
    for k, (start, _) in zip((2, 4), spans, strict=True):
        assert r.text(conv.messages[:k], add_generation_prompt=True, tools=conv.tools) == full[:start]


def test_parallel_results_go_in_one_turn_named_by_their_calls(hf_tokenizer):
    from gptnl.finetune.render import ChatRenderer

    second = {**CALL, "id": "call_2", "function": {"name": "afvalkalender",
                                                   "arguments": {"postcode": "9999 XY", "huisnummer": 3}}}
    msgs = TOOL_CONV["messages"]
    obj = {**TOOL_CONV, "messages": [*msgs[:2], {"role": "assistant", "content": "Ik kijk het na.",
                                                  "tool_calls": [CALL, second]},
                                     {"role": "tool", "tool_call_id": "call_2", "content": "geen gegevens"},
                                     {"role": "tool", "tool_call_id": "call_1", "content": RESULT}, msgs[-1]]}
    conv = parsed(obj)
    text = ChatRenderer(hf_tokenizer).text(conv.messages, tools=conv.tools)
    assert "<|assistant|>\nIk kijk het na.\n<tool_call>\n" in text and "</tool_call>\n<tool_call>\n" in text
    assert ('<|user|>\n<tool_response name="afvalkalender">\ngeen gegevens\n</tool_response>\n'
            '<tool_response name="afvalkalender">\n' + RESULT + '\n</tool_response><|end|>\n') in text


def test_openai_request_shape_renders_like_the_training_shape(hf_tokenizer):
    """vLLM hands the template arguments as objects (it parses OpenAI's JSON strings first); a caller
    that passes the JSON string renders the same text when the string is in json.dumps form."""
    conv = parsed(TOOL_CONV)
    as_string = [dict(m) for m in conv.messages]
    as_string[2] = {**as_string[2], "tool_calls": [{**CALL, "function": {
        "name": "afvalkalender", "arguments": json.dumps(conv.messages[2]["tool_calls"][0]["function"]["arguments"])}}]}
    a = hf_tokenizer.apply_chat_template(conv.messages, tools=TOOLS, tokenize=False)
    b = hf_tokenizer.apply_chat_template(as_string, tools=TOOLS, tokenize=False)
    assert a == b


MSGS = TOOL_CONV["messages"]


@pytest.mark.parametrize("change, reason", [
    ({"tools": []}, "'tools' must be a non-empty list"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "must be 1-64 letters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
     "not a valid JSON schema"),
    ({"messages": [*MSGS[:2], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "paspoort", "arguments": "{}"}}]}, *MSGS[3:]]}, "'paspoort' is not in 'tools'"),
    ({"messages": [*MSGS[:2], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "afvalkalender", "arguments": "{\"postcode\": "}}]}, *MSGS[3:]]},
     "messages[2].tool_calls[0].function.arguments is not valid JSON"),
    ({"messages": [*MSGS[:2], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "afvalkalender", "arguments": "[1]"}}]}, *MSGS[3:]]}, "must be a JSON object"),
    ({"messages": [*MSGS[:2], {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "afvalkalender", "arguments": "{\"postcode\": \"9999 XX\"}"}}]}, *MSGS[3:]]},
     "do not match the function's parameters ('huisnummer' is a required property)"),
    ({"messages": [*MSGS[:3], {**MSGS[3], "tool_call_id": "call_9"}, MSGS[4]]}, "'call_9' answers no open call"),
    ({"messages": [*MSGS[:3], MSGS[4]]}, "the calls call_1 have no tool result"),
    ({"messages": [*MSGS[:2], MSGS[3], MSGS[4]]}, "answers no open call"),
    ({"messages": MSGS[:4]}, "the last message must be the assistant's"),
    ({"messages": [*MSGS[:3], {**MSGS[3], "content": ""}, MSGS[4]]}, "messages[3].content must be a non-empty"),
    ({"messages": [*MSGS[:2], {"role": "assistant", "content": None, "tool_calls": [CALL, CALL]}, *MSGS[3:]]},
     "'call_1' is used twice"),
    ({"messages": [*MSGS[:2], {"role": "assistant", "content": None, "tool_calls": []}, *MSGS[3:]]},
     "tool_calls must be a non-empty list"),
    ({"tools": None}, "'tools' must be a non-empty list"),
])
def test_malformed_tool_conversations_are_refused_naming_file_line_and_field(tmp_path, change, reason):
    from gptnl.config import SftData
    from gptnl.finetune.conversations import prepare

    bad = {**TOOL_CONV, "id": "bad", **change}
    if change.get("tools", "") is None:
        del bad["tools"]
    (tmp_path / "gereedschap.jsonl").write_text(json.dumps(TOOL_CONV) + "\n" + json.dumps(bad) + "\n")
    cfg = SftData(licences=ROOT / "data_pipeline" / "licences.yaml", val_fraction=0.0, decontamination={"tasks": None})
    prepared = prepare(tmp_path / "gereedschap.jsonl", cfg, lambda c: 10, 512)
    kept, refused = prepared.ledger
    assert kept["outcome"] == "kept" and refused["outcome"] == "refused" and refused["step"] == "malformed"
    assert refused["reason"].startswith("gereedschap.jsonl:2: ") and reason in refused["reason"], refused["reason"]


def test_pii_in_tool_arguments_and_results_is_scrubbed():
    from gptnl.config import SftData
    from gptnl.finetune.conversations import prepare

    tools = [{"type": "function", "function": {"name": "vergunning", "parameters": {
        "type": "object", "properties": {"bsn": {"type": "string"}}}}}]
    obj = {**TOOL_CONV, "tools": tools, "messages": [
        MSGS[1], {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function",
             "function": {"name": "vergunning", "arguments": "{\"bsn\": \"111222333\"}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "Rekening NL91ABNA0417164300"},
        {"role": "assistant", "content": "Klaar."}]}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.jsonl").write_text(json.dumps(obj) + "\n")
        cfg = SftData(licences=ROOT / "data_pipeline" / "licences.yaml", val_fraction=0.0,
                      decontamination={"tasks": None})
        conv = prepare(Path(d) / "a.jsonl", cfg, lambda c: 10, 512).train[0]
    assert conv.messages[1]["tool_calls"][0]["function"]["arguments"] == {"bsn": "<BSN>"}
    assert "NL91ABNA0417164300" not in conv.messages[2]["content"] and conv.tools == tools


def test_a_template_without_tools_is_refused_not_trained_through(hf_tokenizer):
    from gptnl.errors import GptnlError
    from gptnl.finetune.render import ChatRenderer

    t = TEMPLATE_BEFORE_TOOLS
    silent = t.replace(t[t.index("{% if message['role'] not"):t.index("{% if message['role'] == 'a")], "")  # no raise

    class OtherTemplate:  # the real tokenizer with another template
        def __init__(self, template):
            self.chat_template = template

        def apply_chat_template(self, messages, **kw):
            return hf_tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kw)

    conv = parsed(TOOL_CONV)
    with pytest.raises(GptnlError, match="does not render tool use .*function 'afvalkalender'"):
        ChatRenderer(OtherTemplate(silent)).spans(conv.messages, conv.tools)
    with pytest.raises(GptnlError, match="chat template refused the conversation: unknown role tool"):
        ChatRenderer(OtherTemplate(TEMPLATE_BEFORE_TOOLS)).spans(conv.messages, conv.tools)


def test_shipped_tool_conversations_pass_every_gate_and_teach_the_format(hf_tokenizer):
    import re

    from gptnl.config import SftData
    from gptnl.finetune.conversations import prepare
    from gptnl.finetune.render import ChatRenderer

    r = ChatRenderer(hf_tokenizer)
    cfg = SftData(licences=ROOT / "data_pipeline" / "licences.yaml", val_fraction=0.1, decontamination={"tasks": None})
    prepared = prepare(INSTRUCTIONS / "hulpmiddelen.jsonl", cfg, lambda c: r.length(c.messages, c.tools), 4096)
    counts = prepared.counts()
    assert 40 <= counts["read"] <= 60 and counts["refused"] == 0 and counts["pii"] == {}, counts
    convs = prepared.train + prepared.val
    calls = results = 0
    for conv in convs:
        full, spans = r.spans(conv.messages, conv.tools)
        said = "".join(full[s:e] for s, e in spans)
        parsed_calls = [json.loads(a or b) for a, b in
                        re.findall(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", said, re.DOTALL)]
        expected = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                    for m in conv.messages for c in m.get("tool_calls", [])]
        assert parsed_calls == expected  # what vLLM's hermes parser would read back
        for m in conv.messages:
            if m["role"] == "tool":
                assert m["content"] in full and m["content"] not in said  # in the prompt, never in the loss
                results += 1
        calls += len(expected)
    assert calls >= 40 and results == calls
    assert sum(not any("tool_calls" in m for m in c.messages) for c in convs) >= 3  # tools offered, none needed
    assert sum(any(len(m.get("tool_calls", [])) > 1 for m in c.messages) for c in convs) >= 3  # parallel calls
