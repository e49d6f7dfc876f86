"""The dashboard's Sanic app: one page, a JSON query API, probes and metrics.

Routes:
    ``GET /``                          the page (static HTML; all assets under ``/static/``)
    ``GET /api/v1/summary``            totals, data extent, "data as of"
    ``GET /api/v1/timeseries``         reports per minute/hour/day/month/year by type
    ``GET /api/v1/activity-types``     activities per activityType
    ``GET /api/v1/algorithm-types``    visits per algorithmType
    ``GET /api/v1/visit-durations``    visit-duration histogram
    ``GET /api/v1/top-pois``           points of interest by visits or unique users
    ``GET /api/v1/geo``                visit density on a lat/lon grid
    ``GET /api/v1/unique-users``       distinct users per UTC day
    ``GET /healthz`` ``/readyz`` ``/metrics``

Every API answer is computed from the rollups (:mod:`dashboard.store`), which a
background task refreshes every ``--refresh-interval`` seconds; ``asOf`` in each answer
is the wall-clock time up to which landed lines are included. ``from``/``to`` in an
answer are the range counted (``[from, to)``, whole minutes; whole UTC days for
unique-users). ``type`` is taken only by the endpoints it filters (timeseries,
unique-users); ``counting=distinct`` counts each distinct report once instead of every
landed line (the default: ``counting=lines``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sanic import Request, Sanic, response
from sanic.config import Config
from sanic.exceptions import NotFound

from dashboard.errors import QueryError
from dashboard.params import QueryParams, parse_params
from dashboard.ranges import Range
from dashboard.settings import DashboardSettings
from dashboard.store import RollupStore
from footfall.metrics import MetricSet, collect, counter, gauge, histogram

__all__ = ["STATIC_DIR", "DashboardContext", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
_PROBES: Final = frozenset({"/healthz", "/readyz"})
#: The page may load nothing from anywhere but this app (proof of "offline" in the browser test too).
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'"
)
_QUERY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)


class _Metrics(MetricSet):
    requests = counter("footfall_dashboard_requests_total", "HTTP requests answered", ("route", "status"))
    query_seconds = histogram("footfall_dashboard_query_seconds", "API query time", ("route",), buckets=_QUERY_BUCKETS)
    refresh_seconds = histogram("footfall_dashboard_refresh_seconds", "time to fold newly landed lines")
    reports_folded = counter("footfall_dashboard_reports_folded_total", "reports folded into the rollups", ("type",))
    bad_lines = counter("footfall_dashboard_bad_lines_total", "landed lines that are not valid reports")
    refresh_errors = counter("footfall_dashboard_refresh_errors_total", "refreshes that failed")
    files = gauge("footfall_dashboard_files", "segment files seen by the last refresh")
    lag = gauge("footfall_dashboard_data_age_seconds", "seconds since the data as-of time")


@dataclasses.dataclass(slots=True)
class DashboardContext:
    """Per-app state (Sanic ``app.ctx``)."""

    settings: DashboardSettings
    store: RollupStore
    refresher: bool
    metrics: _Metrics = dataclasses.field(default_factory=_Metrics)
    task: asyncio.Task[None] | None = None
    ready: bool = False
    last_error: str | None = None


DashboardApp = Sanic[Config, DashboardContext]


async def _refresh_once(ctx: DashboardContext) -> None:
    m = ctx.metrics
    try:
        result = await asyncio.to_thread(ctx.store.refresh)
    except Exception as exc:  # top-level loop: log, count, keep serving the last good rollups
        m.refresh_errors.inc()
        ctx.last_error = f"{type(exc).__name__}: {exc}"
        log.exception("refresh failed")
        return
    ctx.last_error = None
    ctx.ready = True
    m.refresh_seconds.observe(result.seconds)
    m.files.set(result.files_seen)
    for kind, n in result.reports.items():
        if n:
            m.reports_folded.labels(kind).inc(n)
    if result.bad_lines:
        m.bad_lines.inc(result.bad_lines)
    if result.files_folded or result.dropped_files:
        log.info(
            "folded",
            extra={
                "files": result.files_folded,
                "reports": result.reports,
                "bad_lines": result.bad_lines,
                "bytes": result.bytes_folded,
                "dropped_files": result.dropped_files,
                "seconds": round(result.seconds, 3),
            },
        )


async def _refresh_loop(ctx: DashboardContext) -> None:
    interval = ctx.settings.refresh_interval
    while True:
        started = time.monotonic()
        await _refresh_once(ctx)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


def _authorized(header: str | None, credentials: tuple[str, str]) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Compare both parts in constant time, always.
    ok_user = hmac.compare_digest(user.encode(), credentials[0].encode())
    ok_password = hmac.compare_digest(password.encode(), credentials[1].encode())
    return ok_user and ok_password


_View = Callable[[RollupStore, QueryParams, Range], Any]

#: endpoint -> (extra parameters, query). ``type`` only where it filters: the other views
#: are of one report kind (their names say which), so ``type`` there is refused as unknown.
_VIEWS: Final[dict[str, tuple[tuple[str, ...], _View]]] = {
    "timeseries": (
        ("type", "bucket"),
        lambda s, p, r: s.timeseries(r, p.bucket_for(r), p.kinds, dedupe=p.dedupe),
    ),
    "activity-types": ((), lambda s, p, r: s.activity_types(r, dedupe=p.dedupe)),
    "algorithm-types": ((), lambda s, p, r: s.algorithm_types(r, dedupe=p.dedupe)),
    "visit-durations": ((), lambda s, p, r: s.visit_durations(r, dedupe=p.dedupe)),
    "top-pois": (("by", "limit"), lambda s, p, r: s.top_pois(r, p.by, p.limit, dedupe=p.dedupe)),
    "geo": (("cell",), lambda s, p, r: s.geo(r, p.cell, dedupe=p.dedupe)),
    "unique-users": (("type",), lambda s, p, r: s.unique_users(r.whole_days(), p.kinds)),
}


def create_app(
    settings: DashboardSettings,
    *,
    store: RollupStore,
    refresher: bool = True,
    name: str = "footfall-dashboard",
) -> DashboardApp:
    """Build the app.

    Args:
        settings: the process settings.
        store: the started store to query; its owner (``python -m dashboard``, a test)
            starts it before the server and stops it after.
        refresher: run the background refresh loop (tests fold by hand instead).
        name: the Sanic app name (unique per process).
    """
    ctx = DashboardContext(settings=settings, store=store, refresher=refresher)
    # configure_logging=False: Sanic's records go through footfall.logs (JSON lines) only.
    app: DashboardApp = Sanic(name, ctx=ctx, configure_logging=False)
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.shutdown_timeout
    app.config.KEEP_ALIVE_TIMEOUT = 5
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.static("/static", STATIC_DIR, name="static")
    creds = settings.credentials

    @app.before_server_start
    async def _start(app: DashboardApp) -> None:
        c = app.ctx
        if c.refresher:
            c.task = asyncio.get_running_loop().create_task(_refresh_loop(c))
        else:
            c.ready = c.store.as_of_ms is not None

    @app.before_server_stop
    async def _stop(app: DashboardApp) -> None:
        c = app.ctx
        if c.task is not None:
            c.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await c.task
            c.task = None

    @app.after_server_stop
    async def _close(app: DashboardApp) -> None:
        log.info("dashboard stopped")

    @app.on_request
    async def _auth(request: Request) -> response.HTTPResponse | None:
        request.ctx.started = time.perf_counter()
        if creds is None or request.path in _PROBES or _authorized(request.headers.get("authorization"), creds):
            return None
        return response.json(
            {"error": "authentication required"},
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="footfall dashboard", charset="UTF-8"'},
        )

    @app.on_response  # type: ignore[untyped-decorator]
    async def _count(request: Request, resp: response.HTTPResponse) -> None:
        route = request.route.name.rsplit(".", 1)[-1] if request.route else "unmatched"
        app.ctx.metrics.requests.labels(route, str(resp.status)).inc()
        resp.headers.setdefault("Content-Security-Policy", _CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"

    @app.exception(QueryError)
    async def _bad_query(request: Request, exc: QueryError) -> response.HTTPResponse:
        return response.json({"error": str(exc)}, status=exc.status)

    @app.exception(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> response.HTTPResponse:
        return response.json({"error": f"no such path {request.path[:100]!r}"}, status=404)

    @app.get("/", name="page")
    async def page(request: Request) -> response.HTTPResponse:
        return await response.file(STATIC_DIR / "index.html", mime_type="text/html; charset=utf-8")

    @app.get("/healthz", name="healthz")
    async def healthz(request: Request) -> response.HTTPResponse:
        return response.json({"status": "ok"})

    @app.get("/readyz", name="readyz")
    async def readyz(request: Request) -> response.HTTPResponse:
        c = app.ctx
        if c.ready and c.last_error is None:
            return response.json({"status": "ready", "asOf": c.store.as_of_ms})
        reason = c.last_error or "first scan of the record directory not finished"
        return response.json({"status": "not ready", "reason": reason}, status=503)

    @app.get("/metrics", name="metrics")
    async def metrics(request: Request) -> response.HTTPResponse:
        c = app.ctx
        if c.store.as_of_ms is not None:
            c.metrics.lag.set(max(0.0, time.time() - c.store.as_of_ms / 1000))
        return response.text(collect(None, c.metrics.registry), content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/v1/summary", name="summary")
    async def summary(request: Request) -> response.HTTPResponse:
        if request.args:
            name = sorted(request.args)[0][:40]
            raise QueryError(f"unknown parameter {name!r}: /api/v1/summary takes none")
        store = app.ctx.store
        as_of = store.as_of_ms
        data = await _timed(app, "summary", store.summary)
        return response.json({"asOf": as_of, "data": data})

    for endpoint, (extra, view) in _VIEWS.items():
        app.add_route(_make_handler(app, endpoint, extra, view), f"/api/v1/{endpoint}", name=endpoint)

    return app


def _args(request: Request) -> dict[str, list[str]]:
    # Sanic's RequestParameters.get() returns only the first value; keep them all so a
    # repeated parameter is an error rather than silently half-used.
    return {name: request.args.getlist(name) for name in request.args}


async def _timed(app: DashboardApp, route: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        return await asyncio.to_thread(fn)
    finally:
        app.ctx.metrics.query_seconds.labels(route).observe(time.perf_counter() - started)


def _make_handler(app: DashboardApp, endpoint: str, extra: tuple[str, ...], view: _View) -> Callable[[Request], Any]:
    async def handler(request: Request) -> response.HTTPResponse:
        params = parse_params(_args(request), extra)
        store = app.ctx.store
        as_of = store.as_of_ms

        def run() -> dict[str, Any]:
            r = params.resolve(store.extent())
            out: dict[str, Any] = {"asOf": as_of}
            if "type" in extra:
                out["type"] = params.type_name
            out["counting"] = "distinct" if params.dedupe else "lines"
            if r is None:
                out.update({"from": params.start_ms, "to": params.end_ms, "data": []})
                if endpoint == "timeseries":
                    out["bucket"] = None
                return out
            counted = r.whole_days() if endpoint == "unique-users" else r
            out.update({"from": counted.start_ms, "to": counted.end_ms})
            if endpoint == "timeseries":
                out["bucket"] = params.bucket_for(r)
            if endpoint == "unique-users":
                out["grain"] = "day"
            if endpoint == "geo":
                out["cell"] = params.cell
            if endpoint == "top-pois":
                out["by"] = params.by
            out["data"] = view(store, params, r)
            return out

        return response.json(await _timed(app, endpoint, run))

    handler.__name__ = f"api_{endpoint.replace('-', '_')}"
    return handler
