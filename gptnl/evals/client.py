"""Asking an OpenAI-compatible endpoint (our gateway, vLLM itself, another provider) through the
official `openai` client: log-likelihoods via /v1/completions with `echo` + `logprobs` (as
lm-eval's local-completions does), generations via completions or chat, many at once, retried,
and cached so that a rerun does not ask again."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_fixed

from gptnl.evals.tasks import EvalError

BATCH = 8  # prompts per log-likelihood request


class Cache:
    """Answers by request, in SQLite (WAL): safe for the threads of one run and the Ray workers of a sweep."""

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        self._open()

    @retry(retry=retry_if_exception(lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e)),
           stop=stop_after_attempt(100), wait=wait_fixed(0.1), reraise=True)
    def _open(self) -> None:
        """Switch to WAL and make the table; switching takes a lock the busy timeout does not wait for,
        so several workers opening one cache retry it."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def close(self) -> None:
        self._db.close()


class Client:
    def __init__(self, base_url: str, *, model_id: str | None = None, api_key: str | None = None,
                 fingerprint: str = "", cache: Cache | None = None, concurrency: int = 4, timeout: float = 120,
                 retries: int = 3, tokenizer: str | None = None):
        import openai

        self._openai = openai
        self.base_url = base_url.rstrip("/")
        self.api = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none", timeout=timeout,
                                 max_retries=retries)
        self.cache, self.concurrency, self.fingerprint = cache, concurrency, fingerprint
        self.requests = 0
        self.cached = 0
        self.tokenizer_path = tokenizer
        self._tokenizer = None
        self._models: list | None = None
        self.model = model_id or self._only_model()

    def _call(self, fn, *args, **kwargs):
        """One API call; the errors a user can act on become one line."""
        o = self._openai
        try:
            self.requests += 1
            return fn(*args, **kwargs)
        except o.AuthenticationError:
            raise EvalError(f"{self.base_url}: the API key was refused (give one with --api-key)") from None
        except o.APIConnectionError as exc:
            raise EvalError(f"{self.base_url}: cannot reach the endpoint ({exc.__cause__ or exc})") from None
        except o.APIStatusError as exc:
            raise EvalError(f"{self.base_url}: HTTP {exc.status_code}: {exc.message}") from None

    def _listed(self) -> list:
        if self._models is None:
            self._models = list(self._call(self.api.models.list).data)
        return self._models

    def _only_model(self) -> str:
        ids = [m.id for m in self._listed()]
        if len(ids) != 1:
            raise EvalError(f"{self.base_url} serves {len(ids)} models ({', '.join(ids)}): name one "
                            f"(model_id in the sweep, or --model NAME=URL#MODEL)")
        return ids[0]

    @property
    def max_model_len(self) -> int | None:
        """The context the endpoint says the model holds (vLLM and our gateway list it in /v1/models)."""
        found = next((m for m in self._listed() if m.id == self.model), None)
        value = getattr(found, "max_model_len", None) if found is not None else None
        return value if isinstance(value, int) else None

    def tokenize(self, text: str) -> tuple[list[int], int]:
        """(the text's token ids without special tokens, the id that starts a document: BOS, else EOS),
        with the model's own tokenizer (a local export's folder, or `tokenizer` in the sweep)."""
        if self.tokenizer_path is None:
            raise EvalError(f"{self.base_url}: a document longer than the model's context is scored in windows of "
                            "tokens, which needs the model's tokenizer: give `tokenizer: PATH` for this model in the "
                            "sweep (a local export brings its own)")
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True)
        tok = self._tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if start is None:
            raise EvalError(f"{self.tokenizer_path}: the tokenizer has neither a BOS nor an EOS token to start on")
        return tok(text, add_special_tokens=False)["input_ids"], start

    def _key(self, kind: str, payload: dict) -> str:
        raw = json.dumps({"kind": kind, "base": self.base_url, "model": self.model, "fp": self.fingerprint,
                          **payload}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def _cached_map(self, kind: str, payloads: list[dict], compute, use_cache: bool, batch: int = 1) -> list:
        """compute(list of payloads) -> list of answers, run `concurrency` at once, cache in between."""
        keys = [self._key(kind, p) for p in payloads]
        out: list[Any] = [None] * len(payloads)
        todo = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if (self.cache and use_cache) else None
            if hit is not None:
                out[i] = hit
                self.cached += 1
            else:
                todo.append(i)
        chunks = [todo[i:i + batch] for i in range(0, len(todo), batch)]

        def run(chunk: list[int]) -> None:
            for i, answer in zip(chunk, compute([payloads[i] for i in chunk]), strict=True):
                out[i] = answer
                if self.cache and use_cache:
                    self.cache.put(keys[i], answer)

        with ThreadPoolExecutor(self.concurrency) as pool:
            list(pool.map(run, chunks))
        return out

    def loglik(self, pairs: list[tuple[str, str]], use_cache: bool = True) -> list[dict]:
        """For each (context, continuation): {"loglik": sum of the continuation tokens' log-probs,
        "tokens": how many}. The endpoint must return prompt log-probs with `echo`."""

        def compute(payloads: list[dict]) -> list[dict]:
            prompts = [p["context"] + p["continuation"] for p in payloads]
            resp = self._call(self.api.completions.create, model=self.model, prompt=prompts, max_tokens=1,
                              temperature=0, echo=True, logprobs=1)
            answers = []
            for p, choice in zip(payloads, sorted(resp.choices, key=lambda c: c.index), strict=True):
                lp = choice.logprobs
                if lp is None or not lp.token_logprobs or lp.text_offset is None:
                    raise EvalError(f"{self.base_url}: no prompt log-probs in the answer (the endpoint must "
                                    "support echo + logprobs on /v1/completions)")
                start, total, n = len(p["context"]), 0.0, 0
                for offset, value in zip(lp.text_offset[:-1], lp.token_logprobs[:-1], strict=True):
                    if offset >= start and value is not None:
                        total += value
                        n += 1
                answers.append({"loglik": total, "tokens": n})
            return answers

        return self._cached_map("loglik", [{"context": c, "continuation": x} for c, x in pairs], compute,
                                use_cache, batch=BATCH)

    def loglik_tokens(self, windows: list[tuple[list[int], list[int]]], use_cache: bool = True) -> list[dict]:
        """For each (context ids, continuation ids): {"loglik": the continuation's summed log-probs,
        "tokens": how many}, the prompt sent as token ids so that nothing is tokenised twice."""

        def compute(payloads: list[dict]) -> list[dict]:
            prompts = [p["context"] + p["continuation"] for p in payloads]
            resp = self._call(self.api.completions.create, model=self.model, prompt=prompts, max_tokens=1,
                              temperature=0, echo=True, logprobs=1)
            answers = []
            for p, choice in zip(payloads, sorted(resp.choices, key=lambda c: c.index), strict=True):
                lp = choice.logprobs
                values = list(lp.token_logprobs or []) if lp is not None else []
                start, end = len(p["context"]), len(p["context"]) + len(p["continuation"])
                if len(values) < end or any(v is None for v in values[start:end]):
                    raise EvalError(f"{self.base_url}: no prompt log-probs for the token prompt (the endpoint "
                                    "must support echo + logprobs on /v1/completions)")
                answers.append({"loglik": float(sum(values[start:end])), "tokens": end - start})
            return answers

        return self._cached_map("loglik-tokens", [{"context": c, "continuation": x} for c, x in windows], compute,
                                use_cache, batch=BATCH)

    def generate(self, prompts: list[str], *, max_tokens: int, temperature: float = 0.0, chat: bool = False,
                 seed: int = 0, use_cache: bool = True) -> list[dict]:
        """For each prompt: {"text", "completion_tokens", "latency_s"} (latency as first measured)."""

        def compute(payloads: list[dict]) -> list[dict]:
            (p,) = payloads
            started = time.perf_counter()
            if chat:
                resp = self._call(self.api.chat.completions.create, model=self.model, max_tokens=max_tokens,
                                  temperature=temperature, seed=seed,
                                  messages=[{"role": "user", "content": p["prompt"]}])
                text = resp.choices[0].message.content or ""
            else:
                resp = self._call(self.api.completions.create, model=self.model, prompt=p["prompt"],
                                  max_tokens=max_tokens, temperature=temperature, seed=seed)
                text = resp.choices[0].text
            latency = time.perf_counter() - started
            tokens = resp.usage.completion_tokens if resp.usage else len(text.split())
            return [{"text": text, "completion_tokens": tokens, "latency_s": latency}]

        payloads = [{"prompt": p, "max_tokens": max_tokens, "temperature": temperature, "chat": chat, "seed": seed}
                    for p in prompts]
        return self._cached_map("generate", payloads, compute, use_cache)
