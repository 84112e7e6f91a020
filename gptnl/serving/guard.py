"""The output guard: BSN, IBAN and card numbers that pass their checksums never leave the gateway.

It uses the corpus pipeline's detectors, so a number is redacted here exactly when the scrubber
would have removed it from training data. What is guarded, in every answer of a key with the guard on:

- text: `text` (completions, echoed prompts included), a message's or delta's `content`,
  `reasoning_content`, `reasoning`, `refusal`, and each tool call's `function.arguments` and `name`;
- tokens: completions' `logprobs.tokens`/`top_logprobs` and chat's `logprobs.content[]`
  (`token`, `bytes`, `top_logprobs`). The chosen tokens are redacted where they overlap a number in
  their own concatenation (the first overlapping token carries `<KIND>`, the rest become empty, so
  the tokens still join to the redacted text); at those positions the alternatives are replaced by
  the redacted token; elsewhere an alternative is redacted when it would complete a number with
  the text around it.

Token ids cannot be redacted (an id is the number, for anyone with the tokenizer), and a stream's
logprobs arrive before the text that decides them: `prompt_logprobs`, `return_token_ids`,
`return_tokens_as_token_ids` and logprobs on a stream are refused with a 400 for guarded keys.

Streams are guarded per field: the last HOLD characters are held back until the next chunk shows
whether they start a number, and released when the choice finishes. No number is longer than
HOLD, so none can slip out in pieces.
"""

from __future__ import annotations

from gptnl import pii

KINDS = ("BSN", "IBAN", "CREDIT_CARD")
HOLD = 48
TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
UNGUARDABLE = {"prompt_logprobs": "prompt_logprobs", "return_token_ids": "return_token_ids",
               "return_tokens_as_token_ids": "return_tokens_as_token_ids"}


def redact(text: str) -> tuple[str, int]:
    """`text` with guarded numbers replaced by `<KIND>`, and how many were replaced."""
    out, counts = pii.redact(text, "placeholder", kinds=KINDS)
    return out, sum(counts.values())


def refusal(token_fields: set[str], stream: bool) -> tuple[str, str] | None:
    """(message, param) when a guarded key asks for token-level output the guard cannot redact."""
    for name in UNGUARDABLE:
        if name in token_fields:
            return (f"'{name}' is not available with the output guard on (token ids and prompt tokens cannot be "
                    "redacted); ask the operator for a key without the guard", name)
    if stream and "logprobs" in token_fields:
        return ("'logprobs' with 'stream': true is not available with the output guard on; ask without stream",
                "logprobs")
    return None


def redact_message(message: dict) -> int:
    """Redact every text-bearing field of a chat message or delta in place; returns the count."""
    n = 0
    for name in TEXT_FIELDS:
        if isinstance(message.get(name), str):
            message[name], k = redact(message[name])
            n += k
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        for name in ("arguments", "name"):
            if isinstance(fn, dict) and isinstance(fn.get(name), str):
                fn[name], k = redact(fn[name])
                n += k
    return n


def redact_tokens(tokens: list[str]) -> tuple[list[str], set[int], int]:
    """Tokens with every number in their concatenation redacted; the positions touched; the count."""
    joined = "".join(tokens)
    found = pii.find(joined, KINDS)
    if not found:
        return tokens, set(), 0
    out, hit, start = [], set(), 0
    for i, tok in enumerate(tokens):
        end, piece, pos = start + len(tok), [], start
        for f in found:
            if f.end <= start or f.start >= end:
                continue
            hit.add(i)
            if f.start >= pos:
                piece.append(joined[pos:f.start] + f"<{f.kind}>")
            pos = min(end, f.end)
        piece.append(joined[pos:end])
        out.append("".join(piece))
        start = end
    return out, hit, len(found)


def completes_a_number(before: str, token: str, after: str) -> str | None:
    """The kind of number an alternative token would make with the text around it, or None."""
    text = before[-HOLD:] + token + after[:HOLD]
    lo = min(len(before), HOLD)
    for f in pii.find(text, KINDS):
        if f.start < lo + len(token) and lo < f.end:
            return f.kind
    return None


def _alternative(tokens: list[str], i: int, alt: str) -> str:
    kind = completes_a_number("".join(tokens[:i]), alt, "".join(tokens[i + 1:]))
    return f"<{kind}>" if kind else alt


def redact_completion_logprobs(lp: dict) -> int:
    """Completions' logprobs (tokens, top_logprobs, text_offset) redacted in place."""
    tokens = lp.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        return 0
    new, hit, n = redact_tokens(tokens)
    tops = lp.get("top_logprobs") or []
    for i, top in enumerate(tops):
        if not isinstance(top, dict):
            continue
        if i in hit:
            chosen = (lp.get("token_logprobs") or [None] * len(tokens))[i]
            tops[i] = {new[i]: chosen} if chosen is not None else {}
        else:
            redone: dict = {}
            for alt, value in top.items():
                key = _alternative(tokens, i, alt)
                redone[key] = max(value, redone.get(key, value)) if key != alt else value
            tops[i] = redone
    lp["tokens"] = new
    offsets = lp.get("text_offset")
    if isinstance(offsets, list) and offsets and len(offsets) == len(new):
        pos, base = [], offsets[0]
        for tok in new:
            pos.append(base)
            base += len(tok)
        lp["text_offset"] = pos
    return n


def redact_chat_logprobs(lp: dict) -> int:
    """Chat logprobs (`content` and `refusal` lists of token entries) redacted in place."""
    n = 0
    for name in ("content", "refusal"):
        entries = lp.get(name)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("token"), str)
                                                    for e in entries):
            continue
        tokens = [e["token"] for e in entries]
        new, hit, k = redact_tokens(tokens)
        n += k
        for i, e in enumerate(entries):
            if new[i] != e["token"]:
                e["token"], e["bytes"] = new[i], list(new[i].encode())
            alts = e.get("top_logprobs")
            if i in hit:
                e["top_logprobs"] = [{"token": new[i], "logprob": e.get("logprob"), "bytes": list(new[i].encode())}]
            elif isinstance(alts, list):
                for a in alts:
                    if isinstance(a, dict) and isinstance(a.get("token"), str):
                        redone = _alternative(tokens, i, a["token"])
                        if redone != a["token"]:
                            a["token"], a["bytes"] = redone, list(redone.encode())
    return n


def redact_choice(choice: dict, endpoint: str) -> int:
    """Every guarded field of one choice of a whole (not streamed) answer, in place."""
    n = 0
    if endpoint == "chat":
        if isinstance(choice.get("message"), dict):
            n += redact_message(choice["message"])
        if isinstance(choice.get("logprobs"), dict):
            n += redact_chat_logprobs(choice["logprobs"])
    else:
        if isinstance(choice.get("text"), str):
            choice["text"], k = redact(choice["text"])
            n += k
        if isinstance(choice.get("logprobs"), dict):
            n += redact_completion_logprobs(choice["logprobs"])
    return n


class StreamGuard:
    """One per streamed field: feed each delta, send what it returns, then send `flush()`."""

    def __init__(self) -> None:
        self.pending = ""
        self.redacted = 0

    def feed(self, delta: str) -> str:
        buffer = self.pending + delta
        cut = max(0, len(buffer) - HOLD)
        for f in pii.find(buffer, KINDS):
            if f.start < cut < f.end:
                cut = f.start
        while 0 < cut < len(buffer) and buffer[cut - 1].isalnum() and buffer[cut].isalnum():
            cut -= 1  # never split a word or a number: a later chunk could complete it
        ready, self.pending = buffer[:cut], buffer[cut:]
        text, n = redact(ready)
        self.redacted += n
        return text

    def flush(self) -> str:
        text, n = redact(self.pending)
        self.pending = ""
        self.redacted += n
        return text


class ChoiceGuard:
    """One per streamed choice: every text field of its deltas (tool-call arguments per call) held and redacted."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.fields: dict[tuple, StreamGuard] = {}

    @property
    def redacted(self) -> int:
        return sum(g.redacted for g in self.fields.values())

    def _feed(self, key: tuple, holder: dict, name: str, final: bool) -> None:
        if isinstance(holder.get(name), str) or (final and key in self.fields):
            g = self.fields.setdefault(key, StreamGuard())
            text = g.feed(holder.get(name) or "") + (g.flush() if final else "")
            if text or holder.get(name) is not None:
                holder[name] = text

    def feed(self, choice: dict) -> None:
        """Guard one streamed choice in place (its delta, or its text for completions)."""
        final = choice.get("finish_reason") is not None
        if self.endpoint != "chat":
            self._feed(("text",), choice, "text", final)
            return
        delta = choice.setdefault("delta", {})
        if not isinstance(delta, dict):
            return
        for name in TEXT_FIELDS:
            self._feed((name,), delta, name, final)
        calls = {c.get("index", 0): c for c in delta.get("tool_calls") or [] if isinstance(c, dict)}
        pending = {k[1] for k in self.fields if k[0] == "tool"} if final else set()
        for index in sorted(set(calls) | pending):
            call = calls.get(index)
            if call is None:  # a call still holding characters when the choice finishes
                rest = self.fields[("tool", index)].flush()
                if rest:
                    delta.setdefault("tool_calls", []).append({"index": index, "function": {"arguments": rest}})
                continue
            fn = call.setdefault("function", {})
            if isinstance(fn, dict):
                self._feed(("tool", index), fn, "arguments", final)
                if isinstance(fn.get("name"), str):
                    fn["name"], n = redact(fn["name"])
                    self.fields.setdefault(("tool-name", index), StreamGuard()).redacted += n
