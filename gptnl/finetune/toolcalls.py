"""Tool-use conversations in OpenAI's chat format: validated, normalised for the chat template, scrubbed.

A line with `tools` (OpenAI's `[{"type": "function", "function": {name, description, parameters}}]`)
may have assistant messages with `tool_calls` and `tool` messages with the results. What is checked
is what would make a model learn a wrong format: a call of an undeclared function, arguments that are
not a JSON object or break the function's schema, a result that answers no call, a call left
unanswered before the next turn. Arguments are turned from OpenAI's JSON string into an object,
as vLLM does before it renders a conversation, so training and serving render the same text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable

import jsonschema

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


class Malformed(ValueError):
    """Why a tool conversation is not one; the message names the field."""


def uses_tools(obj: dict) -> bool:
    messages = obj.get("messages")
    return "tools" in obj or (isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") == "tool" or "tool_calls" in m) for m in messages))


def parse_tools(tools) -> dict[str, dict]:
    """The declared functions by name, each with its parameters schema (checked to be a JSON schema)."""
    if not isinstance(tools, list) or not tools:
        raise Malformed("'tools' must be a non-empty list of {\"type\": \"function\", \"function\": {...}}")
    functions: dict[str, dict] = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise Malformed(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise Malformed(f"tools[{i}].function.name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if name in functions:
            raise Malformed(f"tools[{i}].function.name {name!r} is declared twice")
        if not isinstance(fn.get("description", ""), str):
            raise Malformed(f"tools[{i}].function.description must be a string")
        schema = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(schema, dict):
            raise Malformed(f"tools[{i}].function.parameters must be a JSON schema object")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise Malformed(f"tools[{i}].function.parameters is not a valid JSON schema ({exc.message})") from None
        functions[name] = schema
    return functions


def _arguments(raw, schema: dict, where: str) -> dict:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Malformed(f"{where}.arguments is not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise Malformed(f"{where}.arguments must be a JSON object, got {type(raw).__name__}")
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(raw))
    if error is not None:
        raise Malformed(f"{where}.arguments do not match the function's parameters ({error.message})")
    return raw


def _calls(m: dict, i: int, functions: dict[str, dict], seen: set[str]) -> list[dict]:
    calls = m["tool_calls"]
    if not isinstance(calls, list) or not calls:
        raise Malformed(f"messages[{i}].tool_calls must be a non-empty list")
    out = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or call.get("type", "function") != "function" or not isinstance(fn, dict):
            raise Malformed(f"{where} must be {{\"id\": ..., \"type\": \"function\", \"function\": {{...}}}}")
        if not isinstance(call.get("id"), str) or not call["id"].strip():
            raise Malformed(f"{where}.id must be a non-empty string")
        if call["id"] in seen:
            raise Malformed(f"{where}.id {call['id']!r} is used twice")
        seen.add(call["id"])
        if fn.get("name") not in functions:
            raise Malformed(f"{where}.function.name {fn.get('name')!r} is not in 'tools' "
                            f"({', '.join(functions)})")
        args = _arguments(fn.get("arguments", "{}"), functions[fn["name"]], f"{where}.function")
        out.append({"id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def _message(m, i: int, functions: dict[str, dict], seen: set[str]) -> dict:
    if not isinstance(m, dict):
        raise Malformed(f"messages[{i}] must be an object with 'role' and 'content'")
    role, content = m.get("role"), m.get("content")
    if role not in ("system", "user", "assistant", "tool"):
        raise Malformed(f"messages[{i}].role {role!r} is not one of system, user, assistant, tool")
    if role == "assistant" and "tool_calls" in m:
        if content is not None and not isinstance(content, str):
            raise Malformed(f"messages[{i}].content must be a string or null next to tool_calls")
        return {"role": role, "content": content or "", "tool_calls": _calls(m, i, functions, seen)}
    if not isinstance(content, str) or not content.strip():
        raise Malformed(f"messages[{i}].content must be a non-empty string")
    if role == "tool":
        if not isinstance(m.get("tool_call_id"), str):
            raise Malformed(f"messages[{i}].tool_call_id must name the call this result answers")
        return {"role": role, "tool_call_id": m["tool_call_id"], "content": content}
    return {"role": role, "content": content}


def _order(messages: list[dict]) -> None:
    """system?, user, then assistant turns; calls answered by tool results before the next assistant."""
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if any(m["role"] == "system" for m in turns):
        raise Malformed("a system message may only come first")
    if not turns or turns[0]["role"] != "user":
        raise Malformed("the first turn must be the user's")
    pending: list[str] = []
    for k, m in enumerate(turns):
        i = k + len(messages) - len(turns)
        prev = turns[k - 1]["role"] if k else None
        if m["role"] == "tool":
            if m["tool_call_id"] not in pending:
                raise Malformed(f"messages[{i}].tool_call_id {m['tool_call_id']!r} answers no open call "
                                f"of the assistant message before it")
            pending.remove(m["tool_call_id"])
            continue
        if pending:
            raise Malformed(f"messages[{i}]: the calls {', '.join(pending)} have no tool result before it")
        if m["role"] == "user" and prev not in (None, "assistant"):
            raise Malformed(f"messages[{i}]: a user turn must follow an assistant turn")
        if m["role"] == "assistant" and prev not in ("user", "tool"):
            raise Malformed(f"messages[{i}]: an assistant turn must follow a user turn or tool results")
        pending = [c["id"] for c in m.get("tool_calls", [])]
    if turns[-1]["role"] != "assistant":
        raise Malformed("the last message must be the assistant's")


def parse(obj: dict) -> tuple[list[dict], list[dict]]:
    """(tools, messages) normalised for the chat template, or Malformed naming the offending field."""
    functions = parse_tools(obj.get("tools"))
    raw = obj.get("messages")
    if not isinstance(raw, list) or not raw:
        raise Malformed("'messages' must be a non-empty list")
    seen: set[str] = set()
    messages = [_message(m, i, functions, seen) for i, m in enumerate(raw)]
    _order(messages)
    return obj["tools"], messages


def _scrub_value(value, redact: Callable[[str], tuple[str, Counter]], found: Counter):
    if isinstance(value, str):
        text, counts = redact(value)
        found.update(counts)
        return text
    if isinstance(value, list):
        return [_scrub_value(v, redact, found) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, redact, found) for k, v in value.items()}
    return value


def scrub(message: dict, redact: Callable[[str], tuple[str, Counter]]) -> tuple[dict, Counter]:
    """The message with PII redacted in its content and in every string of its tool-call arguments."""
    found: Counter = Counter()
    out = {**message, "content": _scrub_value(message["content"], redact, found)}
    if "tool_calls" in message:
        out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _scrub_value(
            c["function"]["arguments"], redact, found)}} for c in message["tool_calls"]]
    return out, found
