"""An OpenAI-compatible HTTP server whose answers the test decides: the log-prob of every token of
a prompt (by the whole prompt text) and the reply to every prompt. Real HTTP on 127.0.0.1, asked
through the official `openai` client, so the evaluation client and scorers run exactly as they do
against vLLM; only the model is scripted."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from gptnl.serving.replicas import free_port

TOKEN = re.compile(r"\s*\S+|\s+")


class ScriptedServer:
    def __init__(self, logprob: Callable[[str], float] = lambda text: -1.0,
                 reply: Callable[[str], str] = lambda prompt: "", key: str | None = None, model: str = "scripted"):
        """`logprob(prompt)`: the log-prob of each of its tokens; `reply(prompt)`: the answer text."""
        self.logprob, self.reply, self.key, self.model = logprob, reply, key, model
        self.requests = 0
        app = FastAPI()

        @app.middleware("http")
        async def auth(request: Request, call_next):
            self.requests += 1
            if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
                return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, status_code=401)
            return await call_next(request)

        @app.get("/v1/models")
        def models():
            return {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test"}]}

        @app.post("/v1/completions")
        async def completions(request: Request):
            # the scripted functions may sleep (a model's service time): off the event loop, so that
            # concurrent requests are served concurrently, as by a real server
            return await run_in_threadpool(self._completions, await request.json())

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await run_in_threadpool(self._chat, await request.json())

        self.port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _completions(self, body: dict) -> dict:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = []
        for i, prompt in enumerate(prompts):
            if body.get("echo"):
                tokens = TOKEN.findall(prompt) + [" x"]
                offsets, at = [], 0
                for t in tokens:
                    offsets.append(at)
                    at += len(t)
                lp = self.logprob(prompt)
                logprobs = {"tokens": tokens, "token_logprobs": [None] + [lp] * (len(tokens) - 1),
                            "text_offset": offsets, "top_logprobs": None}
                choices.append({"index": i, "text": prompt + " x", "logprobs": logprobs, "finish_reason": "length"})
            else:
                text = self.reply(prompt)
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": "stop"})
        completion = sum(len(c["text"].split()) for c in choices)
        return {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": self.model,
                "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": completion,
                                              "total_tokens": 1 + completion}}

    def _chat(self, body: dict) -> dict:
        text = self.reply(body["messages"][-1]["content"])
        return {"id": "chat-1", "object": "chat.completion", "created": int(time.time()), "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()),
                          "total_tokens": 1 + len(text.split())}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "scripted server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(10)
