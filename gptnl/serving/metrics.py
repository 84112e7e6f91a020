"""Prometheus metrics of the gateway, per key and model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gptnl_gateway_requests", "Requests by key, model, endpoint and HTTP status",
                                ["key", "model", "endpoint", "status"], registry=self.registry)
        self.tokens = Counter("gptnl_gateway_tokens", "Tokens by key, model and direction (prompt, completion)",
                              ["key", "model", "direction"], registry=self.registry)
        self.latency = Histogram("gptnl_gateway_request_seconds", "Time from request to the last byte",
                                 ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("gptnl_gateway_time_to_first_token_seconds", "Time to the first streamed token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.redacted = Counter("gptnl_gateway_redacted", "Numbers removed by the output guard",
                                ["key", "model"], registry=self.registry)
        self.healthy = Gauge("gptnl_gateway_healthy_replicas", "Healthy vLLM replicas per model", ["model"],
                             registry=self.registry)

    def observe(self, key: str | None, model: str | None, endpoint: str, status: int, prompt: int | None,
                completion: int | None, redacted: int, seconds: float, ttft: float | None) -> None:
        """Count one finished request."""
        labels = {"key": key or "-", "model": model or "-"}
        self.requests.labels(**labels, endpoint=endpoint, status=str(status)).inc()
        if isinstance(prompt, int) and prompt > 0:
            self.tokens.labels(**labels, direction="prompt").inc(prompt)
        if isinstance(completion, int) and completion > 0:
            self.tokens.labels(**labels, direction="completion").inc(completion)
        if redacted:
            self.redacted.labels(**labels).inc(redacted)
        if model:
            self.latency.labels(model=model, endpoint=endpoint).observe(seconds)
            if ttft is not None:
                self.ttft.labels(model=model).observe(ttft)

    def render(self) -> bytes:
        return generate_latest(self.registry)
