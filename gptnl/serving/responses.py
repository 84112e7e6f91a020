"""vLLM's answers in OpenAI's schema: only OpenAI's fields (plus what the request asked for), chat
logprobs with `refusal`, error bodies with a string `code`, and no server or version in them.

vLLM adds fields of its own (`token_ids`, `prompt_token_ids`, `prompt_logprobs`, `routed_experts`,
`kv_transfer_params`, `stop_reason`, `prompt_text`, …) and names itself in `system_fingerprint`.
A field vLLM adds is passed on only when the request named it (e.g. `return_token_ids: true`);
vLLM's reasoning fields are content, guarded like `content`, and kept when they hold text.
"""

from __future__ import annotations

import json

from gptnl.serving.audit import sanitise_message

TOP = {"id", "object", "created", "model", "choices", "usage"}
CHOICE = {"completions": {"index", "text", "logprobs", "finish_reason"},
          "chat": {"index", "message", "delta", "logprobs", "finish_reason"}}
MESSAGE = {"role", "content", "refusal", "tool_calls", "function_call", "annotations", "audio",
           "reasoning_content", "reasoning"}
OPTIONAL_MESSAGE = {"tool_calls", "function_call", "annotations", "audio", "reasoning_content", "reasoning"}
USAGE = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "completion_tokens_details"}
ASKED = {"return_token_ids": {"token_ids", "prompt_token_ids"}, "prompt_logprobs": {"prompt_logprobs"},
         "kv_transfer_params": {"kv_transfer_params"}}


def asked_fields(body: dict) -> set[str]:
    """The non-OpenAI response fields this request asked vLLM for."""
    return {f for flag, fields in ASKED.items() if body.get(flag) not in (None, False) for f in fields}


def _message(msg: dict, chunk: bool) -> dict:
    out = {k: v for k, v in msg.items() if k in MESSAGE and not (k in OPTIONAL_MESSAGE and v in (None, [], ""))}
    if not chunk:
        out.setdefault("content", None)
        out.setdefault("refusal", None)
    return out


def _choice(choice: dict, endpoint: str, asked: set[str], chunk: bool) -> dict:
    out = {k: v for k, v in choice.items() if k in CHOICE[endpoint] or k in asked}
    for name in ("message", "delta"):
        if isinstance(out.get(name), dict):
            out[name] = _message(out[name], chunk or name == "delta")
    lp = out.get("logprobs")
    if endpoint == "chat" and isinstance(lp, dict):
        out["logprobs"] = {"content": lp.get("content"), "refusal": lp.get("refusal")}
    if "logprobs" not in out and not chunk:
        out["logprobs"] = None
    return out


def _usage(usage: dict) -> dict:
    return {k: v for k, v in usage.items() if k in USAGE and v is not None}


def normalise(data: dict, endpoint: str, asked: set[str], chunk: bool = False) -> dict:
    """One whole answer or one stream chunk in OpenAI's shape."""
    if endpoint == "embeddings":
        return {k: (_usage(v) if k == "usage" and isinstance(v, dict) else v) for k, v in data.items()
                if k in {"object", "data", "model", "usage"}}
    out = {k: v for k, v in data.items() if k in TOP or k in asked}
    if isinstance(out.get("choices"), list):
        out["choices"] = [_choice(c, endpoint, asked, chunk) if isinstance(c, dict) else c for c in out["choices"]]
    if isinstance(out.get("usage"), dict):
        out["usage"] = _usage(out["usage"])
    elif "usage" in out:
        del out["usage"]
    return out


def upstream_error(content: bytes, status: int) -> tuple[dict, str]:
    """vLLM's error body in OpenAI's shape, and the sanitised message for the audit log."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    err = data.get("error", data) if isinstance(data, dict) else None
    if not isinstance(err, dict):
        err = {"message": f"the model's server answered {status} without an error body"}
    message = err.get("message") if isinstance(err.get("message"), str) else f"the model's server answered {status}"
    code, param, kind = err.get("code"), err.get("param"), err.get("type")
    body = {"error": {"message": message[:2000], "type": kind if isinstance(kind, str) else "invalid_request_error",
                      "param": param if isinstance(param, str) else None,
                      "code": code if isinstance(code, str) else None}}
    return body, sanitise_message(message)
