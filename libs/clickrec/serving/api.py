"""`clickrec serve`: the read-only HTTP service over the serving tables (FastAPI, no JVM).

- `GET /v1/recommendations/{user_id}?n=&variant=`: the user's list, or the popular list
  (source `popular`) for an unknown user; 404 for a variant that is not published (`champion`
  before any model is champion gets the popular list, serving.reader.render), 422 with
  FastAPI's usual `detail` body for a bad parameter, 503 before anything is published (also for
  an unknown user of a variant whose lists the stream wrote before its first publish).
- `GET /healthz`: the versions served and the newest ones seen, the snapshot's age and
  staleness, reload counts and the last error; 503 until a variant is published and while the
  snapshot is stale (staleness above serve.max_staleness_seconds, see RecommendationReader).
- `GET /metrics`: Prometheus text: requests by endpoint and status, latency histogram, the
  Delta versions served, reloads (and full reads), reload failures, staleness. On
  serve.metrics_port when set (a second listener in the same process), else on the API's port.

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
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Annotated, Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError, NotFoundError, NotPublishedError, SnapshotReloadError
from clickrec.serving.reader import RecommendationReader, render, validate_request

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
        self.full_reloads = Counter("clickrec_serving_full_reloads",
                                    "of those, snapshots read whole instead of from the version's changes",
                                    registry=self.registry)
        self.reload_failures = Counter("clickrec_serving_reload_failures",
                                       "version checks or reloads that failed (the previous snapshot stayed)",
                                       registry=self.registry)
        self.reload_seconds = Gauge("clickrec_serving_last_reload_seconds", "duration of the last reload",
                                    registry=self.registry)
        self.staleness = Gauge("clickrec_serving_staleness_seconds",
                               "seconds since the snapshot last matched the tables' newest versions",
                               registry=self.registry)
        self.users = Gauge("clickrec_serving_users", "users with a list, by variant", ["variant"],
                           registry=self.registry)
        self._seen = (0, 0, 0)

    def observe(self, reader: RecommendationReader) -> None:
        """Bring the metrics up to the reader's state (after a refresh attempt, and per scrape)."""
        snap = reader.current
        self.table_version.labels(C.GOLD_RECOMMENDATIONS).set(
            -1 if snap.table_version is None else snap.table_version)
        self.table_version.labels(C.GOLD_POPULAR_ITEMS).set(
            -1 if snap.popular_version is None else snap.popular_version)
        for variant, count in snap.users().items():
            self.users.labels(variant).set(count)
        seen, now = self._seen, (reader.reloads, reader.full_reloads, reader.failures)
        for counter, before, after in zip((self.reloads, self.full_reloads, self.reload_failures), seen, now,
                                          strict=True):
            if after > before:
                counter.inc(after - before)
        self._seen = now
        if reader.last_reload_seconds is not None:
            self.reload_seconds.set(reader.last_reload_seconds)
        self.staleness.set(reader.staleness())

    def render(self, reader: RecommendationReader) -> bytes:
        from prometheus_client import generate_latest

        self.observe(reader)
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


def health(reader: RecommendationReader) -> tuple[dict[str, Any], int]:
    """The /healthz body and status: 503 before anything is published and while stale."""
    snap = reader.current
    limit = reader.config.serve.max_staleness_seconds
    staleness = reader.staleness()
    stale = limit is not None and staleness > limit
    status = "not published" if not snap.published else ("stale" if stale else "ok")
    body = {
        "status": status,
        "table_version": snap.table_version,
        "popular_table_version": snap.popular_version,
        "latest_table_version": reader.latest_versions[0],
        "latest_popular_table_version": reader.latest_versions[1],
        "snapshot_age_seconds": round(max(0.0, time.time() - snap.loaded_at), 3) if snap.loaded_at else None,
        "staleness_seconds": round(staleness, 3),
        "max_staleness_seconds": limit,
        "variants": snap.users(),
        "reloads": reader.reloads,
        "full_reloads": reader.full_reloads,
        "reload_failures": reader.failures,
        "last_error": reader.last_error,
    }
    return body, 200 if status == "ok" else 503


def create_metrics_app(reader: RecommendationReader, metrics: ServiceMetrics) -> Any:
    """An app serving only `/metrics` (for serve.metrics_port)."""
    from fastapi import FastAPI, Response

    app = FastAPI(title="clickrec-metrics", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(reader), media_type=CONTENT_TYPE_LATEST)

    return app


class _SideServer:
    """A second uvicorn listener in the running event loop; the main server owns the signals."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self) -> AbstractContextManager[None]:  # type: ignore[override]
                return nullcontext()

        self.server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                            lifespan="off"))
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the bind error
                raise OSError(f"the metrics listener on port {self.server.config.port} stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def create_app(config: ClickrecConfig, reader: RecommendationReader | None = None, *, poll: bool = True) -> Any:
    """The FastAPI app over `reader` (made from `config` when None); polls for new versions if `poll`.

    `app.state.refresh()` runs one poll (version check, maybe a reload, metrics), as the
    background task does every serve.poll_seconds. With serve.metrics_port set, /metrics is
    served by a second listener on that port, started and stopped with the app.
    """
    from fastapi import FastAPI, Path, Query, Response

    sc = config.serve
    reader = reader if reader is not None else RecommendationReader(config)
    metrics = ServiceMetrics()
    metrics.observe(reader)

    def refresh() -> bool:
        try:
            changed = reader.refresh()
        except SnapshotReloadError as exc:
            log.warning("%s; still serving %s v%s", exc, C.GOLD_RECOMMENDATIONS, reader.current.table_version)
            changed = False
        metrics.observe(reader)
        return changed

    async def poll_versions() -> None:
        while True:
            await asyncio.sleep(sc.poll_seconds)
            try:
                await asyncio.to_thread(refresh)
            except Exception:  # anything else: logged, and the next poll tries again
                log.exception("checking the serving tables failed; still serving the previous snapshot")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        side = None
        if sc.metrics_port is not None:
            side = _SideServer(create_metrics_app(reader, metrics), sc.host, sc.metrics_port)
            await side.start()
        task = asyncio.create_task(poll_versions()) if poll else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if side is not None:
                await side.stop()

    app = FastAPI(title="clickrec", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.reader = reader
    app.state.metrics = metrics
    app.state.refresh = refresh

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
        """200 with the versions served once something is published and the snapshot is fresh, else 503."""
        body, status = health(reader)
        return _json(body, status=status)

    if sc.metrics_port is None:
        @app.get("/metrics")
        async def prometheus() -> Response:
            from prometheus_client import CONTENT_TYPE_LATEST

            return Response(metrics.render(reader), media_type=CONTENT_TYPE_LATEST)

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
    log.info("serving %s on http://%s:%d%s", reader.where(), bind_host, bind_port,
             f" (metrics on port {config.serve.metrics_port})" if config.serve.metrics_port else "")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning", access_log=False)
    snap = reader.current
    return {"host": bind_host, "port": bind_port, "table_version": snap.table_version,
            "popular_table_version": snap.popular_version, "reloads": reader.reloads}
