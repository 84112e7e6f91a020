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
