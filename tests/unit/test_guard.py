"""The output guard over every text-bearing field and over token-level fields, in process; and the
IBAN/BSN checks of gptnl.pii it relies on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gptnl import pii
from gptnl.serving import guard

ROOT = Path(__file__).resolve().parents[2]
BSN, IBAN = "111222333", "NL91ABNA0417164300"


def test_a_valid_iban_glued_to_more_characters_is_redacted():
    for text in (f"{IBAN}abc", f"rekening {IBAN}X1 graag", f"{IBAN}0000"):
        out, n = guard.redact(text)
        assert IBAN not in out and "<IBAN>" in out and n == 1, text
    assert guard.redact("NL91ABNA0417164301abc") == ("NL91ABNA0417164301abc", 0)  # fails mod 97


def test_iban_of_every_registry_country_and_bsn_by_stdnum():
    for iban in ("BE68539007547034", "DE89370400440532013000", "FR1420041010050500013M02606",
                 "MT84MALT011000012345MTLCAST001S", "NO9386011117947"):
        assert pii.valid_iban(iban), iban
    assert pii.valid_bsn("111 222 333") and not pii.valid_bsn("123456789") and not pii.valid_bsn("000000000")
    assert pii.luhn_valid("4111 1111 1111 1111") and not pii.luhn_valid("4111111111111112")


def test_redaction_of_the_bundled_sample_is_unchanged():
    """Digest of every line of the shipped sample and instructions, redacted with the kinds of the first
    detectors; taken before the checks moved to python-stdnum."""
    kinds = ("EMAIL", "IBAN", "CREDIT_CARD", "BSN", "PHONE", "ADDRESS", "LICENCE_PLATE", "IP_ADDRESS")
    digest, total = hashlib.sha256(), {}
    files = sorted(p for d in ("data_pipeline/sample", "data_pipeline/instructions") for p in (ROOT / d).rglob("*")
                   if p.is_file() and p.suffix in (".jsonl", ".txt"))
    files = [p for p in files if p.name != "hulpmiddelen.jsonl"]  # added later; test_chat_tools: no PII in it
    for p in files:
        for line in p.read_text(errors="replace").splitlines():
            out, counts = pii.redact(line, "placeholder", kinds=kinds)
            digest.update(out.encode(errors="backslashreplace") + b"\n")
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
    assert total == {"BSN": 4, "EMAIL": 2, "IBAN": 5, "PHONE": 2}
    assert digest.hexdigest() == "4ad506286a033bf613cd87346be1f31c9c10094aeefd858f9bdb6f483ea24469"


def test_message_fields_reasoning_and_tool_call_arguments_are_guarded():
    msg = {"role": "assistant", "content": f"BSN {BSN}", "reasoning_content": f"denk {IBAN}",
           "tool_calls": [{"id": "c1", "type": "function",
                           "function": {"name": "zoek", "arguments": json.dumps({"bsn": BSN})}}]}
    assert guard.redact_message(msg) == 3
    assert BSN not in json.dumps(msg) and IBAN not in json.dumps(msg)
    assert msg["tool_calls"][0]["function"]["arguments"] == '{"bsn": "<BSN>"}'


def test_tokens_overlapping_a_number_are_redacted_and_still_join_to_the_text():
    tokens = ["Mijn ", "BSN ", "11", "12223", "33", " en", " meer"]
    new, hit, n = guard.redact_tokens(tokens)
    assert n == 1 and hit == {2, 3, 4}
    assert "".join(new) == guard.redact("".join(tokens))[0] == "Mijn BSN <BSN> en meer"
    assert new[2:5] == ["<BSN>", "", ""]


@given(st.lists(st.integers(1, 6), min_size=1, max_size=12), st.sampled_from([BSN, IBAN, "4111111111111111"]),
       st.text(alphabet="ab ", max_size=8), st.text(alphabet="ab .", max_size=8))
@settings(max_examples=200, deadline=None)
def test_no_split_of_tokens_lets_a_number_through(cuts, number, before, after):
    text = f"{before} {number} {after}"
    tokens, pos = [], 0
    for c in cuts:
        if pos < len(text):
            tokens.append(text[pos:pos + c])
            pos += c
    tokens.append(text[pos:])
    new, _, _ = guard.redact_tokens(tokens)
    assert number not in "".join(new) and "".join(new) == guard.redact(text)[0]


def test_completion_logprobs_are_redacted_with_their_alternatives_and_offsets():
    tokens = ["BSN", " 111", "222", "333", "."]
    lp = {"tokens": list(tokens), "token_logprobs": [None, -1.0, -2.0, -3.0, -0.5], "text_offset": [0, 3, 7, 10, 13],
          "top_logprobs": [None, {" 111": -1.0, " 999": -2.0}, {"222": -2.0}, {"333": -3.0}, {".": -0.5}]}
    assert guard.redact_completion_logprobs(lp) == 1
    assert "".join(lp["tokens"]) == "BSN <BSN>." and BSN[:3] not in json.dumps(lp)
    assert lp["top_logprobs"][1] == {" <BSN>": -1.0} and lp["top_logprobs"][2] == {"": -2.0}
    assert lp["text_offset"] == [0, 3, 9, 9, 9]


def test_an_alternative_token_that_would_complete_a_number_is_redacted():
    entries = [{"token": t, "logprob": -1.0, "bytes": list(t.encode()), "top_logprobs": []}
               for t in ("BSN ", "11122233", "x")]
    entries[2]["top_logprobs"] = [{"token": "3", "logprob": -0.1, "bytes": [51]},
                                  {"token": "y", "logprob": -2.0, "bytes": [121]}]
    lp = {"content": entries, "refusal": None}
    guard.redact_chat_logprobs(lp)
    assert [a["token"] for a in entries[2]["top_logprobs"]] == ["<BSN>", "y"]
    assert entries[1]["token"] == "11122233"  # not a number on its own: left alone


def test_streamed_tool_call_arguments_and_reasoning_are_held_until_safe():
    g = guard.ChoiceGuard("chat")
    parts = ['{"bsn": "1112', '22333", "x": 1}']
    out = {"args": "", "reasoning": ""}
    for i, part in enumerate(parts):
        final = i == len(parts) - 1
        choice = {"index": 0, "finish_reason": "tool_calls" if final else None,
                  "delta": {"tool_calls": [{"index": 0, "function": {"arguments": part}}],
                            "reasoning_content": f"nummer {BSN[:4]}" if not final else f"{BSN[4:]} klaar"}}
        g.feed(choice)
        delta = choice["delta"]
        out["args"] += "".join(c["function"].get("arguments", "") for c in delta.get("tool_calls", []))
        out["reasoning"] += delta.get("reasoning_content") or ""
    assert out["args"] == '{"bsn": "<BSN>", "x": 1}'
    assert out["reasoning"] == "nummer <BSN> klaar" and g.redacted == 2


def test_token_options_that_cannot_be_redacted_are_named():
    assert guard.refusal({"logprobs"}, stream=False) is None
    assert guard.refusal({"logprobs"}, stream=True)[1] == "logprobs"
    for name in ("prompt_logprobs", "return_token_ids", "return_tokens_as_token_ids"):
        assert guard.refusal({name}, stream=False)[1] == name
