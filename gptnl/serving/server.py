"""`gptnl serve`: start the configured vLLM replicas, wait until they are healthy, serve the gateway,
and on SIGTERM/SIGINT drain the streams in flight before stopping the replicas."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal

from rich.console import Console

from gptnl.config import GatewayConfig, load_vllm_profile
from gptnl.serving.replicas import Pool, Replica, VllmProcess, supervise, vllm_python, wait_healthy

console = Console(stderr=True, soft_wrap=True)


def _die_with_parent() -> None:
    """Runs in each vLLM child before exec: it gets SIGTERM if the gateway dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def build_pools(cfg: GatewayConfig) -> tuple[dict[str, Pool], list[VllmProcess]]:
    pools, processes = {}, []
    python = vllm_python(cfg.vllm_python) if any(m.replicas for m in cfg.models.values()) else None
    for name, m in cfg.models.items():
        replicas = [Replica(url.rstrip("/")) for url in m.upstreams]
        if m.replicas:
            profile = load_vllm_profile(cfg.profiles / f"{m.profile}.yaml")
            for i in range(m.replicas):
                p = VllmProcess(name, m, profile, python, cfg.logs / f"vllm-{name}-{i}.log")
                processes.append(p)
                replicas.append(Replica(p.url, process=p))
        pools[name] = Pool(name, replicas)
    return pools, processes


def serve(cfg: GatewayConfig) -> None:
    import uvicorn

    from gptnl.serving.app import create_app
    from gptnl.serving.edge import protocol_for

    pools, processes = build_pools(cfg)
    timeout = max([load_vllm_profile(cfg.profiles / f"{m.profile}.yaml").start_timeout_s
                   for m in cfg.models.values() if m.replicas] or [60])

    def log(msg: str) -> None:
        console.print(f"[dim]gateway:[/dim] {msg}")

    for p in processes:
        p.start_hook = _die_with_parent
        p.start()
        log(f"starting vLLM for {p.model} on {p.url} (log: {p.log})")
    try:
        asyncio.run(wait_healthy(pools, timeout, log))
    except BaseException:
        for p in processes:
            p.stop()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app):
        stopping = asyncio.Event()
        task = asyncio.create_task(supervise(pools, cfg.health_interval_s, stopping, log))
        log(f"serving {', '.join(pools)} on http://{cfg.host}:{cfg.port}/v1 (keys: {cfg.keys}, audit: {cfg.audit})")
        try:
            yield
        finally:
            stopping.set()
            await task
            await app.state.gateway.aclose()

    app = create_app(cfg, pools, lifespan=lifespan)
    # keep-alive longer than clients' idle gaps: a connection closed just as a client reuses it is an error;
    # h11 with our head limits (uvicorn has no header timeout and no 431); h11's own buffer limit above ours
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=cfg.drain_timeout_s or None, lifespan="on",
                            timeout_keep_alive=75, backlog=4096, http=protocol_for(app.gateway, cfg),
                            h11_max_incomplete_event_size=cfg.max_header_bytes + 65_536)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the previous handler: let that
    # handler be a no-op, so the replicas are stopped below and a requested shutdown exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        for p in processes:
            p.stop()
        log("stopped")

