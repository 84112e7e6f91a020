"""The gateway's routes: OpenAI's endpoints, /health, /metrics, and a 404 in OpenAI's shape for
everything else (so nothing of vLLM is reachable around the gateway).

`create_app` returns the ASGI app uvicorn serves: the routes inside the `Edge` middleware, which
reads the body within the server limits and writes the one audit line of every request.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from gptnl.config import GatewayConfig
from gptnl.serving.edge import Edge
from gptnl.serving.gateway import ENDPOINTS, Gateway
from gptnl.serving.protocol import ApiError
from gptnl.serving.replicas import Pool

ROUTES = "/v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings, /health and /metrics"


def routes(gateway: Gateway, lifespan=None) -> FastAPI:
    app = FastAPI(title="gptnl gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.gateway = gateway

    @app.get("/health")
    async def health():
        state = {name: sum(r.healthy for r in pool.replicas) for name, pool in gateway.pools.items()}
        for name, n in state.items():
            gateway.metrics.healthy.labels(model=name).set(n)
        ok = all(state.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "healthy_replicas": state},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request):
        try:
            key = gateway.authenticate(request)
        except ApiError as err:
            return JSONResponse(err.body(), status_code=err.status)
        if not key.metrics:
            err = ApiError(403, f"key '{key.name}' may not read metrics (create one with --metrics)",
                           "permission_denied")
            return JSONResponse(err.body(), status_code=err.status)
        return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_api_route("/v1/models", gateway.models, methods=["GET"])
    for path in ENDPOINTS:
        app.add_api_route(path, gateway.proxy, methods=["POST"])

    @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def not_found(request: Request, rest: str):
        return request.state.call.refuse(ApiError(404, f"no route /{rest[:100]}: this gateway serves {ROUTES}",
                                                  "not_found"))

    return app


def create_app(cfg: GatewayConfig, pools: dict[str, Pool], *, lifespan=None) -> Edge:
    """The served app; `app.gateway` is the Gateway (closed by the caller's lifespan with `aclose()`)."""
    gateway = Gateway(cfg, pools)
    return Edge(routes(gateway, lifespan), gateway, cfg)
