"""Upstream vLLM servers: the ones the gateway starts (and restarts), the ones it is pointed at,
and which of them are healthy right now.

A replica is taken out after a failed health check or a refused connection and put back when
`/health` answers again. Requests go to the healthy replica with the fewest in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from gptnl.config import ServedModel, VllmProfile
from gptnl.errors import GptnlError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Replica:
    url: str  # base URL, e.g. http://127.0.0.1:8011
    healthy: bool = False
    in_flight: int = 0
    process: VllmProcess | None = None
    failures: int = 0

    def done(self) -> None:
        """A request sent here has ended (however it ended)."""
        self.in_flight -= 1


class Pool:
    def __init__(self, name: str, replicas: list[Replica]):
        self.name = name
        self.replicas = replicas

    def pick(self, exclude: set[str] = frozenset()) -> Replica | None:
        candidates = [r for r in self.replicas if r.healthy and r.url not in exclude]
        return min(candidates, key=lambda r: r.in_flight) if candidates else None

    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)


@dataclass
class VllmProcess:
    """One `vllm.entrypoints.openai.api_server` child, in its own process group."""

    model: str
    cfg: ServedModel
    profile: VllmProfile
    python: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    start_hook: Callable[[], None] | None = None  # runs in the child before exec

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.cfg.path),
                "--served-model-name", self.model, "--max-model-len", str(self.cfg.max_model_len),
                "--host", "127.0.0.1", "--port", str(self.port), *self.profile.args]

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_HOST_IP": "127.0.0.1", **self.profile.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         start_new_session=True, preexec_fn=self.start_hook)
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


VLLM_PYTHON_ENV = "GPTNL_VLLM_PYTHON"


def vllm_python(configured: Path | None) -> Path:
    """The interpreter that has vLLM: the configured one, else $GPTNL_VLLM_PYTHON, else `.venv-vllm`
    beside the project (a clone), else ours."""
    configured = configured or (Path(os.environ[VLLM_PYTHON_ENV]) if os.environ.get(VLLM_PYTHON_ENV) else None)
    candidates = [configured] if configured else [Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python",
                                                  Path(sys.executable)]
    for c in candidates:
        if c is not None and Path(c).is_file():
            return Path(c)
    raise GptnlError(f"no Python with vLLM at {candidates[0]}; create it with scripts/vllm-cpu-venv.sh "
                     "(CPU) or point vllm_python in the gateway config at a vLLM install")


async def check(client: httpx.AsyncClient, replica: Replica) -> bool:
    try:
        r = await client.get(replica.url + "/health", timeout=2.0)
        ok = r.status_code == 200
    except httpx.HTTPError:
        ok = False
    replica.healthy = ok
    replica.failures = 0 if ok else replica.failures + 1
    return ok


async def supervise(pools: dict[str, Pool], interval: float, stopping: asyncio.Event, log) -> None:
    """Health-check every replica; restart a started vLLM that died (with a pause, so a model that
    cannot load does not spin)."""
    async with httpx.AsyncClient() as client:
        while not stopping.is_set():
            for pool in pools.values():
                for r in pool.replicas:
                    was = r.healthy
                    ok = await check(client, r)
                    if was and not ok:
                        log(f"replica {r.url} of {pool.name} is unhealthy; taken out")
                    elif ok and not was:
                        log(f"replica {r.url} of {pool.name} is healthy")
                    p = r.process
                    if p is not None and not p.alive() and time.monotonic() - p.started > 10 and not stopping.is_set():
                        log(f"vLLM for {pool.name} on {r.url} exited with {p.proc.returncode}; restarting "
                            f"(log: {p.log})")
                        p.start()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval)
            except TimeoutError:
                pass


async def wait_healthy(pools: dict[str, Pool], timeout: float, log) -> None:
    """Wait until every vLLM the gateway started is healthy (upstreams it was pointed at join when they
    answer); fail with the log of a vLLM that died."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        for pool in pools.values():
            for r in pool.replicas:
                if r.process is None:
                    await check(client, r)
        while True:
            pending = []
            for pool in pools.values():
                for r in pool.replicas:
                    if r.process is not None and not r.healthy and not await check(client, r):
                        if r.process is not None and not r.process.alive():
                            tail = r.process.log.read_text(errors="replace")[-2000:] if r.process.log.is_file() else ""
                            raise GptnlError(f"vLLM for {pool.name} exited with code {r.process.proc.returncode} "
                                             f"while starting; end of {r.process.log}:\n{tail}")
                        pending.append(r)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise GptnlError(f"vLLM replicas not healthy after {timeout:.0f}s: "
                                 + ", ".join(r.url for r in pending))
            await asyncio.sleep(0.5)


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


async def send(session: aiohttp.ClientSession, pool: Pool, path: str, body: dict, request_id: str):
    """Forward to the least busy healthy replica; a refused connection takes it out and tries the next.
    Returns (response, replica); the caller calls `replica.done()` when the request ends."""
    from gptnl.serving.protocol import ApiError

    tried: set[str] = set()
    data = json.dumps(body).encode("utf-8", "backslashreplace")
    headers = {"content-type": "application/json", "x-request-id": request_id}
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
            replica.done()
            replica.healthy = False  # the health check puts it back when it answers again
