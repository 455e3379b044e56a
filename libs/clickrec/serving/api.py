"""`clickrec serve`: the read-only HTTP service over the serving tables (FastAPI, no JVM).

- `GET /v1/recommendations/{user_id}?n=&variant=`: the user's list, or the popular list
  (source `popular`) for an unknown user; 404 for a variant that is not published (`champion`
  before any model is champion gets the popular list, serving.reader.render), 422 with
  FastAPI's usual `detail` body for a bad parameter, 503 before anything is published (also for
  an unknown user of a variant whose lists the stream wrote before its first publish).
- `GET /healthz`: the versions served; 503 until a variant is published.
- `GET /metrics`: Prometheus text: requests by endpoint and status, latency histogram, the
  Delta versions served and the reload count.

Requests read `reader.current` once (an immutable Snapshot); a background task checks the Delta
versions every serve.poll_seconds and swaps in a new snapshot, so a reload drops no request.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime,
# and their bounds come from the config in create_app's scope.
import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError, NotFoundError, NotPublishedError
from clickrec.serving.reader import RecommendationReader, Snapshot, render, validate_request

log = logging.getLogger(__name__)

VARIANT_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
ENDPOINTS = ("/v1/recommendations/{user_id}", "/healthz", "/metrics")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def endpoint_label(path: str) -> str:
    """A bounded label for a request path (user ids never become label values)."""
    if path.startswith("/v1/recommendations/"):
        return ENDPOINTS[0]
    return path if path in ENDPOINTS else "other"


class ServiceMetrics:
    """The service's Prometheus metrics, in their own registry (one per app)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("clickrec_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("clickrec_http_request_seconds", "HTTP request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.table_version = Gauge("clickrec_serving_table_version",
                                   "Delta version of each serving table held in memory (-1: none)",
                                   ["table"], registry=self.registry)
        self.reloads = Counter("clickrec_serving_reloads", "snapshots loaded after a version change",
                               registry=self.registry)
        self.users = Gauge("clickrec_serving_users", "users with a list, by variant", ["variant"],
                           registry=self.registry)

    def snapshot_loaded(self, snap: Snapshot) -> None:
        self.table_version.labels(C.GOLD_RECOMMENDATIONS).set(
            -1 if snap.table_version is None else snap.table_version)
        self.table_version.labels(C.GOLD_POPULAR_ITEMS).set(
            -1 if snap.popular_version is None else snap.popular_version)
        for variant, lists in snap.variants.items():
            self.users.labels(variant).set(len(lists.rows))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            label = endpoint_label(scope.get("path", ""))
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)
            self.metrics.requests.labels(label, str(status)).inc()


def _json(body: Any, status: int = 200) -> Any:
    from fastapi import Response

    return Response(json.dumps(body, separators=(",", ":")).encode("utf-8"), status_code=status,
                    media_type="application/json")


def _bad_parameter(loc: list[str], msg: str) -> Any:
    """A 422 with FastAPI's validation body shape, so clients parse one error format."""
    return _json({"detail": [{"type": "value_error", "loc": loc, "msg": msg}]}, status=422)


def create_app(config: ClickrecConfig, reader: RecommendationReader | None = None, *, poll: bool = True) -> Any:
    """The FastAPI app over `reader` (made from `config` when None); polls for new versions if `poll`."""
    from fastapi import FastAPI, Path, Query, Response

    sc = config.serve
    reader = reader if reader is not None else RecommendationReader(config)
    metrics = ServiceMetrics()
    metrics.snapshot_loaded(reader.current)

    async def poll_versions() -> None:
        while True:
            await asyncio.sleep(sc.poll_seconds)
            try:
                changed = await asyncio.to_thread(reader.refresh)
            except Exception:
                log.exception("reloading the serving tables failed; still serving the previous snapshot")
                continue
            if changed:
                metrics.reloads.inc()
                metrics.snapshot_loaded(reader.current)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(poll_versions()) if poll else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    app = FastAPI(title="clickrec", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.reader = reader
    app.state.metrics = metrics

    @app.get("/v1/recommendations/{user_id}")
    async def get_recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=sc.max_user_id_length)],
        n: Annotated[int, Query(ge=1, le=sc.max_n)] = 10,
        variant: Annotated[str, Query(max_length=32, pattern=VARIANT_PATTERN)] = "champion",
    ) -> Response:
        """The user's top-n list of `variant`; the popular list for an unknown user."""
        snap = reader.current  # one read: the whole request sees one snapshot
        try:
            validate_request(user_id, n, max_n=sc.max_n, max_user_id_length=sc.max_user_id_length)
        except InputError as exc:
            return _bad_parameter(["path", "user_id"], str(exc))
        if not snap.published:
            return _json({"detail": f"{C.GOLD_RECOMMENDATIONS} is not published yet"}, status=503)
        try:
            body = render(snap, user_id, n, variant)
        except NotPublishedError as exc:  # lists without a popular row yet: temporary
            return _json({"detail": str(exc)}, status=503)
        except NotFoundError as exc:
            return _json({"detail": str(exc)}, status=404)
        return _json(body)

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 with the versions served once something is published, else 503."""
        snap = reader.current
        body = {
            "status": "ok" if snap.published else "not published",
            "table_version": snap.table_version,
            "popular_table_version": snap.popular_version,
            "variants": {v: len(lists.rows) for v, lists in snap.variants.items()},
            "reloads": reader.reloads,
        }
        return _json(body, status=200 if snap.published else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def serve(config: ClickrecConfig, *, host: str | None = None, port: int | None = None) -> dict[str, Any]:
    """Run the service until interrupted; return what it served (the command's summary)."""
    import uvicorn

    bind_host = host or config.serve.host
    bind_port = port or config.serve.port
    reader = RecommendationReader(config)
    app = create_app(config, reader)
    if not reader.current.published:
        log.warning("%s is not published yet at %s: serving 503 until it is", C.GOLD_RECOMMENDATIONS, reader.where())
    log.info("serving %s on http://%s:%d", reader.where(), bind_host, bind_port)
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning", access_log=False)
    snap = reader.current
    return {"host": bind_host, "port": bind_port, "table_version": snap.table_version,
            "popular_table_version": snap.popular_version, "reloads": reader.reloads}
