"""Prometheus metrics of one app instance, and the ASGI middleware that times every request.

Each app gets its own registry (tests build many apps in one process). With several uvicorn workers,
`serve()` points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start, and
`/metrics` then aggregates all workers' files, whichever worker answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "alphafuse_http_requests_total", "HTTP requests by method, route template and status",
            ["method", "route", "status"], registry=r,
        )
        self.latency = Histogram(
            "alphafuse_http_request_duration_seconds", "HTTP request latency by method, route template and status",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.catalogue = Gauge(
            "alphafuse_catalogue_items", "items that can be recommended (trained + cold)", registry=r,
            multiprocess_mode="mostrecent",
        )
        self.cold = Gauge(
            "alphafuse_cold_items", "cold items folded in after training", registry=r,
            multiprocess_mode="mostrecent",
        )
        self.batch_size = Histogram(
            "alphafuse_batch_size", "recommend requests ranked together in one batch", buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_latency = Histogram(
            "alphafuse_batch_duration_seconds", "time to rank one batch (model + index)", buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # any client can send any method name: only the standard ones get their own series
        labels = (method if method in KNOWN_METHODS else "other", route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def set_catalogue(self, items: int, cold: int) -> None:
        self.catalogue.set(items)
        self.cold.set(cold)

    def render(self) -> bytes:
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)
        return generate_latest(merged)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


UNMATCHED = "<unmatched>"


def route_label(scope: Scope, routes: Sequence[BaseRoute] = ()) -> str:
    """The route template of a handled request (`/items/{item_id:path}`, `/docs/assets/{path:path}`),
    never the raw path, so label cardinality stays bounded; UNMATCHED for paths no route serves.

    FastAPI records the matched route in the scope only for its API routes; a plain Starlette route
    (/openapi.json, /docs) or a mount (the docs' assets) leaves just its endpoint there, so those are
    found among `routes` by endpoint."""
    route: Any = scope.get("route")
    if route is None and (endpoint := scope.get("endpoint")) is not None:
        route = next((r for r in routes if getattr(r, "endpoint", None) is endpoint
                      or (isinstance(r, Mount) and r.app is endpoint)), None)  # fmt: skip
    path = getattr(route, "path", None)
    if not path:
        return UNMATCHED
    return f"{path}/{{path:path}}" if isinstance(route, Mount) else str(path)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead). Labels by route template (`route_label`); `routes` is
    the app's live route list, where the templates of non-API routes are looked up."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before responding, ServerErrorMiddleware answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            label = route_label(scope, self.routes)
            self.metrics.observe_request(scope["method"], label, status, time.perf_counter() - started)
