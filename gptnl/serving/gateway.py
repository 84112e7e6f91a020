"""The gateway: OpenAI's API for services, with vLLM behind it and nothing of vLLM reachable without a key.

A request is authenticated, validated into its plan (the effective values vLLM will use, one
normalised body), counted off the event loop, admitted by the key's lease (`limiter.hold`),
forwarded to a healthy replica, and passed back through the output guard in OpenAI's schema.
Everything a request holds (its lease, the upstream connection, the replica's in-flight count)
sits on the request's exit stack; `complete()` closes it and writes the one audit line, at the
latest in the `finally` of the edge middleware, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import aiohttp
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gptnl.config import GatewayConfig
from gptnl.serving import guard, protocol, responses
from gptnl.serving.audit import AuditLog, clean
from gptnl.serving.keys import KeyRecord, KeyStore
from gptnl.serving.limits import Limiter, Refused
from gptnl.serving.metrics import Metrics
from gptnl.serving.protocol import ApiError, Plan
from gptnl.serving.replicas import Pool, Upstream, send
from gptnl.serving.store import open_store

log = logging.getLogger("gptnl.gateway")
INLINE_CHARS = 2000  # a prompt this short is tokenised in well under a millisecond
ENDPOINTS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}


class OpenAIJSON(JSONResponse):
    """JSON as OpenAI sends it; a lone surrogate (echoed from a request) goes out escaped, never as a crash."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


@dataclass
class Call:
    """One request: what the audit log and the metrics learn, and what it holds until it completes."""

    request_id: str
    endpoint: str
    start: float = field(default_factory=time.perf_counter)
    key: KeyRecord | None = None
    model: str | None = None
    status: int | None = None  # set by the gateway; else the response's status
    http_status: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    redacted: int = 0
    stream: bool = False
    error: str | None = None
    content: dict | None = None
    ttft: float | None = None
    lease: object | None = None
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    client_gone: bool = False
    answered: bool = False  # the last byte of the answer was handed to the server
    stream_done: bool = False  # the upstream stream ended with [DONE]
    completed: bool = False

    def refuse(self, err: ApiError) -> OpenAIJSON:
        self.status, self.error = err.status, clean(err.message, 300)
        return OpenAIJSON(err.body(), status_code=err.status, headers={**err.headers, "x-request-id": self.request_id})


class PromptCounter:
    """Prompt tokens as vLLM will count them, from the model folder's own tokenizer and chat template,
    in a worker thread: a long prompt list must not stall the event loop for every other client."""

    def __init__(self, cfg: GatewayConfig):
        self._paths = {name: m.path for name, m in cfg.models.items() if m.path is not None}
        self._tok: dict = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prompt-count")

    def load(self, model: str):
        if model not in self._tok:
            from transformers import AutoTokenizer

            path = self._paths.get(model)
            self._tok[model] = AutoTokenizer.from_pretrained(path, local_files_only=True) if path else None
        return self._tok[model]

    def _count(self, model: str, p: Plan) -> list[int] | None:
        tok = self.load(model)
        if tok is None:
            return None
        try:
            if p.endpoint == "chat":
                ids = tok.apply_chat_template(p.body["messages"], tools=p.body.get("tools"), add_generation_prompt=True,
                                              tokenize=True)
                return [len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)]
            return [len(x) if isinstance(x, list) else len(tok(x, add_special_tokens=True)["input_ids"])
                    for x in p.prompts]
        except Exception:  # noqa: BLE001 (a shape the template or tokenizer does not take; vLLM will say what)
            return None

    async def count(self, model: str, p: Plan) -> list[int] | None:
        """Tokens per prompt, or None when they cannot be counted here (vLLM then checks alone).
        A short prompt is counted at once: handing it to a thread would cost more than counting it."""
        if len(p.prompts) == 1 and p.endpoint != "chat" and len(p.prompts[0]) <= INLINE_CHARS:
            return self._count(model, p)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._count, model, p)


class Gateway:
    def __init__(self, cfg: GatewayConfig, pools: dict[str, Pool]):
        self.cfg, self.pools = cfg, pools
        self.keys = KeyStore(cfg.keys)
        self.audit = AuditLog(cfg.audit, fsync=cfg.audit_fsync)
        self.limiter = Limiter(store=open_store(cfg))
        self.metrics = Metrics()
        self.counter = PromptCounter(cfg)
        for name in cfg.models:
            self.counter.load(name)  # loaded now, not inside the first request
        self.upstream = Upstream(cfg.upstream_timeout_s)

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.limiter.store.aclose()
        self.audit.close()

    # --- the one place a request ends ---------------------------------------------------------

    async def complete(self, call: Call) -> None:
        """Settle the lease, release everything the request holds, write its audit line; once."""
        if call.completed:
            return
        call.completed = True
        if call.lease is not None and call.prompt_tokens is not None:
            call.lease.settle(call.prompt_tokens + (call.completion_tokens or 0))
        try:
            await call.stack.aclose()
        except Exception as exc:  # noqa: BLE001 (the audit line is written all the same)
            log.warning("releasing request %s failed: %s", call.request_id, type(exc).__name__)
        self.finish(call)

    def finish(self, call: Call) -> None:
        status = call.status or call.http_status or 500
        key = call.key.name if call.key else None
        record = {"request_id": call.request_id, "key": key, "model": call.model, "endpoint": call.endpoint,
                  "status": status, "stream": call.stream, "prompt_tokens": call.prompt_tokens,
                  "completion_tokens": call.completion_tokens,
                  "latency_ms": round((time.perf_counter() - call.start) * 1000, 1)}
        if call.redacted:
            record["redacted"] = call.redacted
        if call.error:
            record["error"] = call.error
        if call.content is not None and call.key is not None and call.key.log_content:
            record["content"] = call.content
        self.audit.write(record)
        self.metrics.observe(key, call.model, call.endpoint, status, call.prompt_tokens, call.completion_tokens,
                             call.redacted, time.perf_counter() - call.start, call.ttft)

    # --- routes ----------------------------------------------------------------------------------

    def identify(self, call: Call, headers: list[tuple[bytes, bytes]]) -> None:
        """Name the key on the audit line of a request that ends before its route runs (an abort, a 408)."""
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                try:
                    record = self.keys.lookup(value[7:].decode("latin-1").strip())
                except Exception:  # noqa: BLE001 (the route answers for an unreadable store)
                    return
                if record is not None and record.problem() is None:
                    call.key = record
                return

    def authenticate(self, request: Request) -> KeyRecord:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise ApiError(401, "No API key: send it as 'Authorization: Bearer <key>' (the openai client's "
                                "api_key)", "missing_api_key")
        record = self.keys.lookup(header[7:].strip())
        if record is None:
            raise ApiError(401, "Incorrect API key; ask the operator for a key (`gptnl keys create`)",
                           "invalid_api_key")
        problem = record.problem()
        if problem:
            raise ApiError(401, problem + "; ask the operator for a new key", "invalid_api_key")
        return record

    async def models(self, request: Request) -> Response:
        call: Call = request.state.call
        try:
            call.key = self.authenticate(request)
        except ApiError as err:
            return call.refuse(err)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "gptnl",
                 "max_model_len": self.cfg.models[name].max_model_len}
                for name in self.cfg.models if name in call.key.models]
        return OpenAIJSON({"object": "list", "data": data}, headers={"x-request-id": call.request_id})

    async def proxy(self, request: Request) -> Response:
        call: Call = request.state.call
        try:
            p = await self._admit(request, call)
            response, replica = await send(await self.upstream.session(), self.pools[call.model],
                                           request.url.path, p.body, call.request_id)
        except ApiError as err:
            return call.refuse(err)
        except Exception as exc:  # noqa: BLE001 (answered in OpenAI's shape, audited, and logged without content)
            log.error("request %s failed: %s", call.request_id, type(exc).__name__, exc_info=False)
            return call.refuse(ApiError(500, f"internal error in the gateway; request id {call.request_id}",
                                        "internal_error"))
        call.stack.callback(replica.done)
        # a whole answer gives the connection back; one that ends early breaks it, so vLLM stops generating
        call.stack.callback(lambda: response.release() if call.stream_done or not p.stream else response.close())
        headers = {"x-request-id": call.request_id, **(call.lease.headers if call.lease else {})}
        if response.status != 200:
            return await self._upstream_error(call, response, headers)
        if not p.stream:
            return await self._whole(call, p, response, headers)
        return StreamingResponse(self._relay(call, p, response), media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})

    async def _admit(self, request: Request, call: Call) -> Plan:
        """Key, model, plan, counted prompt and lease, or an ApiError naming what is wrong."""
        call.key = key = self.authenticate(request)
        body = parse_json(request.state.body)
        call.model = model = self.check_model(body, key, call.endpoint)
        m = self.cfg.models[model]
        p = protocol.plan(body, call.endpoint, m, model)
        call.stream = p.stream
        if key.output_guard and (why := guard.refusal(p.token_fields, p.stream)):
            raise ApiError(400, why[0], "guard_unsupported_option", why[1])
        counted = await self.counter.count(model, p) if call.endpoint != "embeddings" else None
        if call.endpoint != "embeddings":
            protocol.settle_max_tokens(p, max(counted) if counted else None, m, model)
        try:
            call.lease = await call.stack.enter_async_context(
                self.limiter.hold(key, protocol.reservation(p, counted)))
        except Refused as r:
            raise ApiError(r.status, str(r), r.code,
                           headers={"Retry-After": str(r.retry_after)} if r.retry_after else None) from None
        if key.log_content:
            call.content = {"request": body.get("messages", body.get("prompt", body.get("input")))}
        return p

    def check_model(self, body: dict, key: KeyRecord, endpoint: str) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required: one of the ids from /v1/models", "missing_model", "model")
        shown = clean(model, 64)
        if model not in self.cfg.models:
            raise ApiError(404, f"The model '{shown}' does not exist; see /v1/models", "model_not_found", "model")
        if model not in key.models:
            raise ApiError(403, f"key '{key.name}' may not use model '{model}' (it may use: {', '.join(key.models)})",
                           "model_not_allowed", "model")
        if endpoint == "embeddings" and not self.cfg.models[model].embeddings:
            raise ApiError(404, f"model '{model}' does not offer embeddings", "model_not_found", "model")
        return model

    # --- answers ---------------------------------------------------------------------------------

    async def _upstream_error(self, call: Call, response: aiohttp.ClientResponse, headers: dict) -> Response:
        """vLLM's own 4xx/5xx, in OpenAI's shape; the audit keeps a sanitised message only."""
        try:
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            content = b""
        body, call.error = responses.upstream_error(content, response.status)
        if call.key.output_guard:
            body["error"]["message"], _ = guard.redact(body["error"]["message"])
        call.status = response.status
        return OpenAIJSON(body, status_code=response.status, headers=headers)

    async def _whole(self, call: Call, p: Plan, response: aiohttp.ClientResponse, headers: dict) -> Response:
        try:
            data = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # a replica that died or broke off mid-answer
            return call.refuse(ApiError(502, f"the model's replica broke off its answer ({type(exc).__name__}); "
                                             "retry the request", "upstream_error"))
        if not isinstance(data, dict):
            return call.refuse(ApiError(502, "the model's replica answered something that is not an answer",
                                        "upstream_error"))
        data = responses.normalise(data, call.endpoint, responses.asked_fields(p.body))
        usage = data.get("usage") or {}
        call.prompt_tokens, call.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        choices = [c for c in data.get("choices") or [] if isinstance(c, dict)]
        if call.key.output_guard and call.endpoint != "embeddings":
            call.redacted = sum(guard.redact_choice(c, call.endpoint) for c in choices)
        if call.content is not None:
            call.content["response"] = [(c.get("message") or {}).get("content", c.get("text")) for c in choices]
        return OpenAIJSON(data, headers=headers)

    async def _relay(self, call: Call, p: Plan, response: aiohttp.ClientResponse):
        """vLLM's SSE stream, chunk by chunk, normalised and guarded; usage taken from the final chunk.
        The closing `[DONE]` is sent by the edge after the audit line is written."""
        guards: dict[int, guard.ChoiceGuard] = {}
        texts: dict[int, list[str]] = {}
        asked = responses.asked_fields(p.body)
        try:
            async for raw in response.content:
                if not raw.startswith(b"data: "):
                    continue
                payload = raw[6:].decode(errors="replace").strip()
                if payload == "[DONE]":
                    call.stream_done, call.status = True, 200
                    break
                chunk = responses.normalise(json.loads(payload), call.endpoint, asked, chunk=True)
                if chunk.get("usage"):
                    call.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    call.completion_tokens = chunk["usage"].get("completion_tokens")
                    if not p.client_usage:
                        if not chunk.get("choices"):
                            continue
                        del chunk["usage"]
                for choice in chunk.get("choices") or []:
                    self._guard_choice(call, choice, guards, texts)
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode("utf-8", "backslashreplace")
            if not call.stream_done:
                call.status, call.error = 502, "the upstream stream ended without [DONE]"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            call.status, call.error = 502, f"upstream stream broke: {type(exc).__name__}"
        finally:
            call.redacted = sum(g.redacted for g in guards.values())
            if call.content is not None:
                call.content["response"] = ["".join(texts[i]) for i in sorted(texts)]

    def _guard_choice(self, call: Call, choice: dict, guards: dict, texts: dict) -> None:
        index = choice.get("index", 0) if isinstance(choice.get("index", 0), int) else 0
        if call.key.output_guard:
            guards.setdefault(index, guard.ChoiceGuard(call.endpoint)).feed(choice)
        holder = choice.get("delta") if call.endpoint == "chat" else choice
        text = holder.get("content" if call.endpoint == "chat" else "text") if isinstance(holder, dict) else None
        if text:
            if call.ttft is None:
                call.ttft = time.perf_counter() - call.start
            texts.setdefault(index, []).append(text)


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc.__class__.__name__} at position "
                            f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))})", "invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return body
