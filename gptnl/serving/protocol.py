"""The API contract: one pydantic request model per endpoint, and the plan the gateway acts on.

OpenAI's fields come first, in OpenAI's order; vLLM's extensions that the gateway must see (they
change how many tokens run, or what comes back) follow; anything else passes through unchanged
(`extra="allow"`), as vLLM accepts it. Validation is pydantic's lax mode, the same as vLLM's, so a
value vLLM would coerce (`"n": 5.0` → 5) is coerced here, and one it would refuse (`"n": 2.5`) is
refused here with OpenAI's error shape.

`plan()` turns a request into the **effective** values vLLM will use (how many tokens per choice,
how many choices, which optional fields come back) and the one normalised body that is forwarded,
so what the limits, caps, audit and guard check is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gptnl.config import ServedModel

MAX_PROMPTS = 1024  # prompts in one completions request (vLLM itself allows far more)
MAX_MESSAGES = 1024
MAX_STOP = 16
CHARS_PER_TOKEN = 64  # a string longer than this many characters per context token cannot fit

NonNegative = Annotated[int, Field(ge=0)]
TokenIds = list[NonNegative]


class ApiError(Exception):
    """A refusal in OpenAI's error shape; `code` is a string, as OpenAI's schema says."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
             429: "rate_limit_error", 431: "invalid_request_error", 499: "client_closed_request",
             500: "server_error", 502: "upstream_error", 503: "service_unavailable"}

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "api_error"),
                          "param": self.param, "code": self.code}}


class Contract(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(Contract):
    include_usage: bool | None = None


class CompletionRequest(Contract):
    model: str
    prompt: str | list[str] | TokenIds | list[TokenIds]
    echo: bool | None = False
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: NonNegative | None = None
    max_tokens: NonNegative | None = 16  # OpenAI's and vLLM's default
    n: Annotated[int, Field(ge=1)] = 1
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    # vLLM's extensions the gateway reads
    max_completion_tokens: NonNegative | None = None  # ignored by vLLM's completions; checked all the same
    prompt_logprobs: int | None = None
    return_token_ids: bool | None = None
    return_tokens_as_token_ids: bool | None = None


class Message(Contract):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionRequest(Contract):
    messages: list[Message]
    model: str
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    top_logprobs: NonNegative | None = None
    max_tokens: NonNegative | None = None
    max_completion_tokens: NonNegative | None = None
    n: Annotated[int, Field(ge=1)] | None = 1
    presence_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    # vLLM's extensions the gateway reads
    prompt_logprobs: int | None = None
    return_token_ids: bool | None = None
    return_tokens_as_token_ids: bool | None = None


class EmbeddingRequest(Contract):
    input: str | list[str] | TokenIds | list[TokenIds]
    model: str
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None


MODELS = {"completions": CompletionRequest, "chat": ChatCompletionRequest, "embeddings": EmbeddingRequest}


@dataclass
class Plan:
    """What will run: the forwarded body and the effective values read from it."""

    endpoint: str
    body: dict
    request: Contract
    max_tokens: int = 0  # per choice, as vLLM will use it (chat: filled in once the prompt is counted)
    n: int = 1
    stream: bool = False
    client_usage: bool = False  # a stream's client asked for the usage chunk
    token_fields: set[str] = field(default_factory=set)  # token-level fields the client asked for

    @property
    def prompts(self) -> list:
        """Each prompt as the counter takes it: text, token ids, or (chat) the messages."""
        if self.endpoint == "chat":
            return [self.body["messages"]]
        value = self.body["input" if self.endpoint == "embeddings" else "prompt"]
        if isinstance(value, str) or (value and isinstance(value[0], int)) or not value:
            return [value]
        return list(value)


def check_sizes(body: dict, endpoint: str, m: ServedModel) -> None:
    """Refuse lists and strings that could never run, before any validation or tokenising is spent on them."""
    name = {"chat": "messages", "embeddings": "input"}.get(endpoint, "prompt")
    value = body.get(name)
    limit = MAX_MESSAGES if endpoint == "chat" else MAX_PROMPTS
    if isinstance(value, list) and value and not isinstance(value[0], int) and len(value) > limit:
        raise ApiError(400, f"'{name}' has {len(value)} items; this gateway takes at most {limit}", "too_many_items",
                       name)
    texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] \
        if isinstance(value, list) else []
    if endpoint == "chat" and isinstance(value, list):
        texts = [msg.get("content") for msg in value if isinstance(msg, dict) and isinstance(msg.get("content"), str)]
    longest = max((len(t) for t in texts), default=0)
    if longest > m.max_model_len * CHARS_PER_TOKEN:
        raise ApiError(400, f"a string in '{name}' has {longest} characters, more than model's context of "
                            f"{m.max_model_len} tokens can hold", "prompt_too_long", name)
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP:
        raise ApiError(400, f"'stop' has {len(stop)} items; at most {MAX_STOP}", "too_many_items", "stop")


def validate(body: dict, endpoint: str) -> Contract:
    """The request as its model; a validation error becomes a 400 naming the field, without its value."""
    try:
        return MODELS[endpoint].model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = [str(p) for p in first["loc"] if not str(p).startswith(("function-", "union", "list[", "str", "int"))]
        param = ".".join(loc) or None
        raise ApiError(400, f"{param or 'the request'}: {first['msg']}", "invalid_value",
                       loc[0] if loc else None) from None


def check_cap(name: str, value: int | None, m: ServedModel, model: str) -> None:
    if value is not None and value > m.max_tokens:
        raise ApiError(400, f"{name}={value} is over this model's cap of {m.max_tokens}", "max_tokens_too_large", name)


def plan(body: dict, endpoint: str, m: ServedModel, model: str) -> Plan:
    """The effective request: coerced values, the token count per choice vLLM will use, one body to forward."""
    check_sizes(body, endpoint, m)
    req = validate(body, endpoint)
    forwarded = req.model_dump(exclude_unset=True)
    p = Plan(endpoint, forwarded, req)
    if endpoint == "embeddings":
        return p
    check_cap("max_tokens", req.max_tokens, m, model)
    check_cap("max_completion_tokens", req.max_completion_tokens, m, model)
    p.n, p.stream = req.n or 1, bool(req.stream)
    if endpoint == "completions":  # vLLM's completions reads max_tokens only (null: its default of 16)
        p.max_tokens = 16 if req.max_tokens is None else req.max_tokens
        forwarded["max_tokens"] = p.max_tokens
        forwarded.pop("max_completion_tokens", None)
        if req.logprobs is not None:
            p.token_fields.add("logprobs")
    else:  # chat: max_completion_tokens wins, then max_tokens, then what the context leaves (set after counting)
        chosen = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        p.max_tokens = chosen if chosen is not None else -1
        forwarded.pop("max_tokens", None)
        forwarded.pop("max_completion_tokens", None)
        if req.logprobs:
            p.token_fields.add("logprobs")
    for name in ("prompt_logprobs", "return_token_ids", "return_tokens_as_token_ids"):
        if getattr(req, name) not in (None, False):
            p.token_fields.add(name)
    if p.stream:
        p.client_usage = bool(req.stream_options and req.stream_options.include_usage)
        forwarded["stream_options"] = {**(forwarded.get("stream_options") or {}), "include_usage": True}
    return p


def settle_max_tokens(p: Plan, longest_prompt: int | None, m: ServedModel, model: str) -> None:
    """Fill in the open chat budget and check prompt + answer against the context, as vLLM will."""
    if longest_prompt is not None and longest_prompt >= m.max_model_len:
        raise ApiError(400, f"the prompt is {longest_prompt} tokens; model '{model}' takes at most "
                            f"{m.max_model_len - 1} with room to answer", "prompt_too_long",
                       "messages" if p.endpoint == "chat" else "prompt")
    if p.max_tokens < 0:  # chat without a limit: the cap, within the room the context leaves
        p.max_tokens = min(m.max_tokens, m.max_model_len - (longest_prompt or 0))
    if longest_prompt is not None and longest_prompt + p.max_tokens > m.max_model_len:
        raise ApiError(400, f"the prompt is {longest_prompt} tokens and max_tokens is {p.max_tokens}: together "
                            f"over the {m.max_model_len} tokens model '{model}' can hold", "context_length_exceeded",
                       "max_tokens")
    if p.endpoint == "chat":
        p.body["max_completion_tokens"] = p.max_tokens  # the cap holds even when the client leaves it open


def reservation(p: Plan, prompt_tokens: list[int] | None) -> int:
    """Tokens to hold against the key's limits: every prompt, plus each choice's answer for every prompt."""
    if p.endpoint == "embeddings":
        return max(1, sum(prompt_tokens or []))
    prompts = len(prompt_tokens) if prompt_tokens else len(p.prompts)
    answer = max(1, p.max_tokens)  # echo with max_tokens=0 still runs one step
    return sum(prompt_tokens or []) + answer * p.n * max(1, prompts)
