"""Local HF exports served for the length of a run, through the same stack a government service
calls: vLLM replicas behind the gateway, with a key made for the run. Evaluating what is served
(chat template, output guard, limits) is the point; a bare `transformers` loop would measure
something else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gptnl.assets import asset
from gptnl.errors import GptnlError

ROOT = Path(__file__).resolve().parents[2]  # the clone, when run from one: its scripts/ and .venv-vllm/


def node_address() -> str:
    """This machine's address as the other nodes of a cluster reach it (Ray's own choice when Ray is
    installed: the address its nodes use to talk to each other)."""
    try:
        from ray.util import get_node_ip_address

        return get_node_ip_address()
    except ImportError:
        import socket

        return socket.gethostbyname(socket.gethostname())


def ensure_vllm() -> None:
    """Make the clone's CPU vLLM environment (`.venv-vllm`, a few minutes once) unless one is named
    by the variable or already there: vLLM cannot share gptnl's environment (it pins its own torch)."""
    from gptnl.serving.replicas import VLLM_PYTHON_ENV

    script = ROOT / "scripts" / "vllm-cpu-venv.sh"  # a clone's; an installed gptnl names vLLM by the variable
    if os.environ.get(VLLM_PYTHON_ENV) or (ROOT / ".venv-vllm" / "bin" / "python").exists():
        return
    if not script.is_file():
        raise GptnlError(f"no Python with vLLM: set {VLLM_PYTHON_ENV} to one (on CPU, scripts/vllm-cpu-venv.sh "
                         "in a clone of gptnl makes it)")
    if subprocess.run(["bash", str(script)]).returncode != 0:
        raise GptnlError(f"{script} failed; see the output above")


@contextmanager
def served(models: dict[str, Path], workdir: Path, *, key_name: str = "eval", rpm: int = 100000,
           tpm: int = 100000000, max_model_len: int = 1024, timeout_s: float = 900,
           reachable: bool = False) -> Iterator[tuple[str, str]]:
    """Start `gptnl serve` for `models` ({served name: HF dir}); yields (base URL, API key) and stops
    the gateway and its replicas on exit. `reachable`: the gateway listens on every interface and
    the URL names this node's address, so that workers on other nodes can ask it (the key guards it)."""
    import yaml

    from gptnl.serving.keys import KeyStore, hash_key
    from gptnl.serving.replicas import free_port

    ensure_vllm()
    workdir.mkdir(parents=True, exist_ok=True)
    for name, path in models.items():
        if not (Path(path) / "config.json").is_file():
            raise GptnlError(f"model {name}: {path} is not an HF export (no config.json)")
    port = free_port()
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "host": "0.0.0.0" if reachable else "127.0.0.1", "port": port,
        "keys": "keys.json", "audit": "audit.jsonl", "logs": "logs",
        "profiles": str(asset("serving", "profiles")),
        "models": {name: {"path": str(Path(path).resolve()), "max_tokens": 512, "max_model_len": max_model_len,
                          "replicas": 1, "profile": "cpu"} for name, path in models.items()}}))
    store = KeyStore(workdir / "keys.json")
    key_file = workdir / f"{key_name}.key"
    known = key_file.read_text().strip() if key_file.is_file() else None
    if not known or not any(r.hash == hash_key(known) and not r.revoked and set(models) <= set(r.models)
                            for r in store.records()):
        # a new key when the models changed (names stay unique in the key store, revoked ones too)
        key = store.create(f"{key_name}-{len(store.records()) + 1}", list(models), rpm=rpm, tpm=tpm,
                           max_concurrent=64)
        key_file.write_text(key)
        os.chmod(key_file, 0o600)
    key = key_file.read_text().strip()
    log = open(workdir / "gateway.log", "ab")  # noqa: SIM115 - kept open for the gateway's lifetime
    gateway = subprocess.Popen([sys.executable, "-m", "gptnl", "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        _wait_healthy(gateway, port, timeout_s, workdir)
        yield f"http://{node_address() if reachable else '127.0.0.1'}:{port}/v1", key
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(120)
        except subprocess.TimeoutExpired:
            gateway.kill()
        log.close()


def _wait_healthy(gateway: subprocess.Popen, port: int, timeout_s: float, workdir: Path) -> None:
    """Poll the gateway's /health each second until it answers 200; a gateway that exits stops the wait."""
    import httpx
    from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

    @retry(retry=retry_if_result(lambda ok: not ok), stop=stop_after_delay(timeout_s), wait=wait_fixed(1))
    def healthy() -> bool:
        if gateway.poll() is not None:
            raise GptnlError(f"the gateway exited with code {gateway.returncode}; see {workdir / 'gateway.log'}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        healthy()
    except RetryError:
        raise GptnlError(f"the gateway did not become healthy in {timeout_s:.0f} s; see {workdir}/logs") from None
