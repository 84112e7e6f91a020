"""The gateway: OpenAI's API for services, with vLLM behind it and nothing of vLLM reachable without a key.

Each request is authenticated, checked against its key's models and limits, forwarded to a
healthy replica (a refused connection moves it to the next one), passed back chunk by chunk
through the output guard, and written to the audit log before its last byte is sent. Errors use
OpenAI's shape, so the `openai` client raises the matching exception with our message.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gptnl.config import GatewayConfig
from gptnl.serving.audit import AuditLog
from gptnl.serving.guard import StreamGuard, redact
from gptnl.serving.keys import KeyRecord, KeyStore
from gptnl.serving.limits import Limiter, Refused
from gptnl.serving.metrics import Metrics
from gptnl.serving.replicas import Pool

ENDPOINTS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               499: "client_closed_request", 502: "upstream_error", 503: "service_unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers or {}

    def response(self, request_id: str) -> JSONResponse:
        body = {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "api_error"),
                          "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers={**self.headers, "x-request-id": request_id})


@dataclass
class Call:
    """What the audit log and the metrics learn about one request."""

    request_id: str
    endpoint: str
    start: float = field(default_factory=time.perf_counter)
    key: KeyRecord | None = None
    model: str | None = None
    status: int = 200
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    redacted: int = 0
    stream: bool = False
    error: str | None = None
    content: dict | None = None
    ttft: float | None = None
    client_usage: bool = True  # a stream's client asked for the usage chunk


class PromptCounter:
    """Prompt tokens as vLLM will count them, from the model folder's own tokenizer and chat template."""

    def __init__(self, cfg: GatewayConfig):
        self._paths = {name: m.path for name, m in cfg.models.items() if m.path is not None}
        self._tok: dict = {}

    def _tokenizer(self, model: str):
        if model not in self._tok:
            from transformers import AutoTokenizer

            path = self._paths.get(model)
            self._tok[model] = AutoTokenizer.from_pretrained(path, local_files_only=True) if path else None
        return self._tok[model]

    def count(self, model: str, endpoint: str, body: dict) -> list[int] | None:
        """Tokens per prompt, or None when they cannot be counted here (vLLM then checks alone)."""
        tok = self._tokenizer(model)
        if tok is None:
            return None
        try:
            if endpoint == "chat":
                return [len(tok.apply_chat_template(body["messages"], add_generation_prompt=True,
                                                    tokenize=True)["input_ids"])]
            prompt = body.get("prompt")
            prompts = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
            return [len(p) if isinstance(p, list) else len(tok(p, add_special_tokens=True)["input_ids"])
                    for p in prompts]
        except Exception:  # a shape the template or tokenizer does not take; vLLM will say what is wrong
            return None


def create_app(cfg: GatewayConfig, pools: dict[str, Pool], *, lifespan=None) -> FastAPI:
    app = FastAPI(title="gptnl gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    keys = KeyStore(cfg.keys)
    audit = AuditLog(cfg.audit, fsync=cfg.audit_fsync)
    limiter = Limiter()
    metrics = Metrics()
    counter = PromptCounter(cfg)
    for name in cfg.models:
        counter._tokenizer(name)  # loaded now, not inside the first request
    upstream = Upstream(cfg.upstream_timeout_s)
    app.state.client, app.state.audit, app.state.metrics = upstream, audit, metrics

    def finish(call: Call) -> None:
        key = call.key.name if call.key else None
        record = {"request_id": call.request_id, "key": key, "model": call.model, "endpoint": call.endpoint,
                  "status": call.status, "stream": call.stream, "prompt_tokens": call.prompt_tokens,
                  "completion_tokens": call.completion_tokens,
                  "latency_ms": round((time.perf_counter() - call.start) * 1000, 1)}
        if call.redacted:
            record["redacted"] = call.redacted
        if call.error:
            record["error"] = call.error
        if call.content is not None and call.key is not None and call.key.log_content:
            record["content"] = call.content
        audit.write(record)
        labels = {"key": key or "-", "model": call.model or "-"}
        metrics.requests.labels(**labels, endpoint=call.endpoint, status=str(call.status)).inc()
        if call.prompt_tokens:
            metrics.tokens.labels(**labels, direction="prompt").inc(call.prompt_tokens)
        if call.completion_tokens:
            metrics.tokens.labels(**labels, direction="completion").inc(call.completion_tokens)
        if call.redacted:
            metrics.redacted.labels(**labels).inc(call.redacted)
        if call.model:
            metrics.latency.labels(model=call.model, endpoint=call.endpoint).observe(time.perf_counter() - call.start)
            if call.ttft is not None:
                metrics.ttft.labels(model=call.model).observe(call.ttft)

    def refuse(call: Call, err: ApiError) -> JSONResponse:
        call.status, call.error = err.status, err.message
        finish(call)
        return err.response(call.request_id)

    def authenticate(request: Request) -> KeyRecord:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise ApiError(401, "No API key: send it as 'Authorization: Bearer <key>' (the openai client's "
                                "api_key)", "missing_api_key")
        record = keys.lookup(header[7:].strip())
        if record is None:
            raise ApiError(401, "Incorrect API key; ask the operator for a key (`gptnl keys create`)",
                           "invalid_api_key")
        problem = record.problem()
        if problem:
            raise ApiError(401, problem + "; ask the operator for a new key", "invalid_api_key")
        return record

    @app.get("/health")
    async def health():
        state = {name: sum(r.healthy for r in pool.replicas) for name, pool in pools.items()}
        for name, n in state.items():
            metrics.healthy.labels(model=name).set(n)
        ok = all(state.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "healthy_replicas": state},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request):
        rid = uuid.uuid4().hex
        try:
            key = authenticate(request)
        except ApiError as err:
            return err.response(rid)
        if not key.metrics:
            return ApiError(403, f"key '{key.name}' may not read metrics (create one with --metrics)",
                            "permission_denied").response(rid)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(request: Request):
        call = Call(uuid.uuid4().hex, "models")
        try:
            call.key = authenticate(request)
        except ApiError as err:
            return refuse(call, err)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "gptnl",
                 "max_model_len": cfg.models[name].max_model_len}
                for name in cfg.models if name in call.key.models]
        finish(call)
        return JSONResponse({"object": "list", "data": data}, headers={"x-request-id": call.request_id})

    async def proxy(request: Request, path: str):
        call = Call(uuid.uuid4().hex, ENDPOINTS[path])
        try:
            call.key = authenticate(request)
            body = await read_json(request, cfg.max_body_bytes)
            call.model = model = check_model(body, call.key, cfg, call.endpoint)
            call.stream = bool(body.get("stream"))
            reserve = prepare(body, call, cfg, counter)
            try:
                reservation = limiter.acquire(call.key.name, call.key.rpm, call.key.tpm, call.key.max_concurrent,
                                              reserve)
            except Refused as r:
                raise ApiError(429, str(r), "rate_limit_exceeded", headers={"Retry-After": str(r.retry_after)}) \
                    from None
        except ApiError as err:
            return refuse(call, err)
        if call.key.log_content:
            call.content = {"request": body.get("messages", body.get("prompt", body.get("input")))}
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                used = None if call.prompt_tokens is None else call.prompt_tokens + (call.completion_tokens or 0)
                limiter.release(call.key.name, reservation, used)

        try:
            response, replica = await send(await upstream.session(), pools[model], path, body, call)
        except ApiError as err:
            release()
            return refuse(call, err)
        if response.status != 200:  # vLLM's own 4xx, already in OpenAI's shape
            content = await response.read()
            response.release()
            replica.in_flight -= 1
            release()
            call.status = response.status
            call.error = _error_message(content)
            finish(call)
            return Response(content, status_code=response.status, media_type="application/json",
                            headers={"x-request-id": call.request_id})
        if not call.stream:
            try:
                data = json.loads(await response.read())
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                # a replica that died or broke off mid-answer: the slot goes back and the request is audited
                release()
                return refuse(call, ApiError(502, f"the model's replica broke off its answer ({type(exc).__name__}); "
                                                  "retry the request", "upstream_error"))
            finally:
                response.release()
                replica.in_flight -= 1
            usage = data.get("usage") or {}
            call.prompt_tokens, call.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if call.key.output_guard and call.endpoint != "embeddings":
                for choice in data.get("choices", []):
                    holder, field_ = (choice.get("message") or {}, "content") if "message" in choice \
                        else (choice, "text")
                    if isinstance(holder.get(field_), str):
                        holder[field_], n = redact(holder[field_])
                        call.redacted += n
            if call.content is not None:
                call.content["response"] = [c.get("message", {}).get("content", c.get("text"))
                                            for c in data.get("choices", [])]
            release()
            finish(call)
            return JSONResponse(data, headers={"x-request-id": call.request_id})
        return StreamingResponse(relay(response, replica, call, release), media_type="text/event-stream",
                                 headers={"x-request-id": call.request_id, "cache-control": "no-cache"})

    async def relay(response: aiohttp.ClientResponse, replica, call: Call, release):
        """vLLM's SSE stream, chunk by chunk, through the guard; usage taken from the final chunk."""
        guards: dict[int, StreamGuard] = {}
        texts: dict[int, list[str]] = {}
        done = False
        try:
            async for raw in response.content:
                if not raw.startswith(b"data: "):
                    continue
                payload = raw[6:].decode().rstrip("\r\n")
                if payload.strip() == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if chunk.get("usage"):
                    call.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    call.completion_tokens = chunk["usage"].get("completion_tokens")
                    if not call.client_usage:
                        continue
                for choice in chunk.get("choices", []):
                    holder, field_ = (choice.setdefault("delta", {}), "content") if call.endpoint == "chat" \
                        else (choice, "text")
                    text = holder.get(field_)
                    if call.key.output_guard:
                        guard = guards.setdefault(choice.get("index", 0), StreamGuard())
                        text = guard.feed(text or "")
                        if choice.get("finish_reason") is not None:
                            text += guard.flush()
                        if text or holder.get(field_) is not None:
                            holder[field_] = text
                    if text:
                        if call.ttft is None:
                            call.ttft = time.perf_counter() - call.start
                        texts.setdefault(choice.get("index", 0), []).append(text)
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            call.status = 200 if done else 502
            if not done:
                call.error = "the upstream stream ended without [DONE]"
        except (asyncio.CancelledError, GeneratorExit):
            call.status, call.error = 499, "the client closed the connection"
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.status, call.error = 502, f"upstream stream broke: {type(exc).__name__}"
        finally:
            if done:
                response.release()
            else:
                response.close()  # vLLM sees the connection go and stops generating
            replica.in_flight -= 1
            call.redacted = sum(g.redacted for g in guards.values())
            if call.content is not None:
                call.content["response"] = ["".join(texts[i]) for i in sorted(texts)]
            release()
            finish(call)  # the audit line is written before the stream's last bytes
        if done:
            yield "data: [DONE]\n\n"

    def route(path: str):
        async def handler(request: Request):
            return await proxy(request, path)
        return handler

    for path in ENDPOINTS:
        app.add_api_route(path, route(path), methods=["POST"])

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def not_found(rest: str):
        return refuse(Call(uuid.uuid4().hex, "unknown"), ApiError(
            404, f"no route /{rest}: this gateway serves /v1/models, /v1/completions, /v1/chat/completions, "
                 "/v1/embeddings, /health and /metrics", "not_found"))

    return app


def _error_message(content: bytes) -> str:
    try:
        return json.loads(content)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return content[:200].decode(errors="replace")


async def read_json(request: Request, limit: int) -> dict:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body is {int(length)} bytes; the limit is {limit}", "request_too_large")
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes", "request_too_large")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return body


def check_model(body: dict, key: KeyRecord, cfg: GatewayConfig, endpoint: str) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: one of the ids from /v1/models", "missing_model", "model")
    if model not in cfg.models:
        raise ApiError(404, f"The model '{model}' does not exist; see /v1/models", "model_not_found", "model")
    if model not in key.models:
        raise ApiError(403, f"key '{key.name}' may not use model '{model}' (it may use: {', '.join(key.models)})",
                       "model_not_allowed", "model")
    if endpoint == "embeddings" and not cfg.models[model].embeddings:
        raise ApiError(404, f"model '{model}' does not offer embeddings", "model_not_found", "model")
    return model


def prepare(body: dict, call: Call, cfg: GatewayConfig, counter: PromptCounter) -> int:
    """Check the request against the model's caps; returns the tokens to reserve against the key's tpm."""
    m = cfg.models[call.model]
    if call.endpoint == "embeddings":
        return 1
    field_ = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    asked = body.get(field_)
    if asked is not None and (not isinstance(asked, int) or isinstance(asked, bool) or asked < 0):
        raise ApiError(400, f"'{field_}' must be a non-negative integer", "invalid_value", field_)
    if asked is not None and asked > m.max_tokens:
        raise ApiError(400, f"{field_}={asked} is over this model's cap of {m.max_tokens}", "max_tokens_too_large",
                       field_)
    n = body.get("n", 1) if isinstance(body.get("n", 1), int) else 1
    prompts = counter.count(call.model, call.endpoint, body)
    longest = max(prompts) if prompts else 0
    if prompts and longest >= m.max_model_len:
        raise ApiError(400, f"the prompt is {longest} tokens; model '{call.model}' takes at most "
                            f"{m.max_model_len - 1} with room to answer", "prompt_too_long", "messages"
                       if call.endpoint == "chat" else "prompt")
    if asked is None:
        asked = min(m.max_tokens, m.max_model_len - longest)
        body["max_tokens"] = asked  # the cap holds even when the client leaves it open
    if prompts and longest + asked > m.max_model_len:
        raise ApiError(400, f"the prompt is {longest} tokens and {field_} is {asked}: together over the "
                            f"{m.max_model_len} tokens model '{call.model}' can hold", "context_length_exceeded",
                       field_)
    if call.stream:
        opts = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        call.client_usage = bool(opts.get("include_usage"))
        body["stream_options"] = {**opts, "include_usage": True}  # usage for the audit log and the tpm limit
    return (sum(prompts) if prompts else 0) + asked * max(1, n) * (len(prompts) if prompts else 1)


class Upstream:
    """One aiohttp session for all upstream calls (made inside the server's event loop)."""

    def __init__(self, timeout_s: float):
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(  # read_bufsize: an SSE line may carry many logprobs
                timeout=self.timeout, read_bufsize=1 << 20,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


async def send(session: aiohttp.ClientSession, pool: Pool, path: str, body: dict, call: Call):
    """Forward to the least busy healthy replica; a refused connection takes it out and tries the next."""
    tried: set[str] = set()
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json", "x-request-id": call.request_id}
    while True:
        replica = pool.pick(tried)
        if replica is None:
            raise ApiError(503, f"model '{pool.name}' has no healthy replica right now; retry shortly",
                           "no_healthy_replica", headers={"Retry-After": "5"})
        tried.add(replica.url)
        replica.in_flight += 1
        try:
            return await session.post(replica.url + path, data=data, headers=headers), replica
        except (aiohttp.ClientConnectionError, TimeoutError):  # no answer came back: refused, reset, timed out
            replica.in_flight -= 1
            replica.healthy = False  # the health check puts it back when it answers again
