"""A conversation as token ids and a loss mask, through the tokenizer's own chat template.

The text trained on is exactly what `tokenizer.apply_chat_template` renders, which is what vLLM
renders at serving time. The mask comes from rendering prefixes: the text before an assistant
message is the rendering of the turns before it with the generation prompt, and the message ends
where the rendering including it ends. So the assistant's content and its end-of-turn marker carry
the loss, the prompts and role markers do not, for any template that renders turns in order.
In a tool-use conversation the assistant's tool calls are assistant tokens (they carry the loss);
the tool results are not. Rendering is checked to keep every call and result, since a template
that does not know tools would silently train on conversations without them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptnl.errors import GptnlError


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    mask: list[bool]  # True where the token is the assistant's (carries the loss)

    @property
    def targets(self) -> int:
        """Tokens that carry loss: a masked token is predicted from the one before it."""
        return sum(self.mask[1:])


class ChatRenderer:
    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise GptnlError("the tokenizer has no chat template; fine-tuning needs the template serving will use")
        self.tok = tokenizer

    def text(self, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None) -> str:
        from jinja2 import TemplateError

        # `tools` only when there are some: a template's output without them stays what it was before tools
        extra = {"tools": tools} if tools else {}
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                                **extra)
        except TemplateError as exc:
            raise GptnlError(f"the tokenizer's chat template refused the conversation: {exc}") from None

    def spans(self, messages: list[dict], tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
        """The full text and the (start, end) characters of each assistant message."""
        full = self.text(messages, tools=tools)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.text(messages[:i], add_generation_prompt=True, tools=tools) if i else ""
            through = self.text(messages[: i + 1], tools=tools)
            if not (full.startswith(before) and full.startswith(through) and len(before) < len(through)):
                raise GptnlError("the chat template does not render turns in order (a prefix of the conversation "
                                 "renders differently); the assistant tokens cannot be found")
            end = len(through)
            while end > len(before) and through[end - 1].isspace():
                end -= 1  # the newline after an end-of-turn marker is the template's, not the answer's
            spans.append((len(before), end))
        if tools or any("tool_calls" in m or m["role"] == "tool" for m in messages):
            _check_tools_rendered(full, spans, messages, tools or [])
        return full, spans

    def encode(self, messages: list[dict], tools: list[dict] | None = None) -> Encoded:
        full, spans = self.spans(messages, tools)
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        mask = []
        for start, end in enc["offset_mapping"]:
            mask.append(any(s <= start < e for s, e in spans) and end > start)
        return Encoded(list(enc["input_ids"]), mask)

    def length(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        return len(self.tok(self.text(messages, tools=tools), add_special_tokens=False)["input_ids"])


def _check_tools_rendered(full: str, spans: list[tuple[int, int]], messages: list[dict], tools: list[dict]) -> None:
    """Every declared function, call and result is in the text, calls inside the assistant's spans."""
    said = "".join(full[s:e] for s, e in spans)
    missing = [f"function {t['function']['name']!r}" for t in tools if t["function"]["name"] not in full]
    for m in messages:
        for c in m.get("tool_calls", []):
            if c["function"]["name"] not in said:
                missing.append(f"the call of {c['function']['name']!r}")
        if m["role"] == "tool" and m["content"] not in full:
            missing.append(f"the result for {m['tool_call_id']!r}")
    if missing:
        raise GptnlError("the tokenizer's chat template does not render tool use (it drops "
                         f"{', '.join(missing[:3])}); fine-tune tool conversations with a template that knows "
                         "tools, such as gptnl's own (gptnl.tokenizer.CHAT_TEMPLATE)")
