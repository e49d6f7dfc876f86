"""A bare Sanic endpoint: the ceiling the gateway is measured against (perf/gateway_wrk.py).

Same server set-up as the gateway (Sanic worker manager, uvloop, access log off, same
worker count), routes ``POST /api/visit/v1[/]`` and ``/api/activity/v1[/]`` that read the
body and answer 200 with a small JSON body — no decompression, validation or Kafka.

Run: ``python perf/references/bare_sanic.py --port 8081 --workers 2``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import SimpleNamespace

from sanic import Request, Sanic
from sanic.config import Config
from sanic.response import HTTPResponse
from sanic.worker.loader import AppLoader


async def _ingest(request: Request) -> HTTPResponse:
    body = request.body  # read (Sanic has already buffered it), as the gateway does
    return HTTPResponse(b'{"accepted":%d}' % (len(body) > 0), status=200, content_type="application/json")


async def _healthz(request: Request) -> HTTPResponse:
    return HTTPResponse(b'{"status":"ok"}', content_type="application/json")


def create_app() -> Sanic[Config, SimpleNamespace]:
    """The bare app (a factory, so each worker builds its own)."""
    app: Sanic[Config, SimpleNamespace] = Sanic("bare_sanic", configure_logging=False)
    app.config.ACCESS_LOG = False
    app.config.KEEP_ALIVE_TIMEOUT = 75
    for path in ("/api/visit/v1", "/api/activity/v1"):
        app.add_route(_ingest, path, methods=["POST"], strict_slashes=False, name=path.strip("/").replace("/", "_"))
    app.add_route(_healthz, "/healthz", methods=["GET"], name="healthz")
    app.add_route(_healthz, "/readyz", methods=["GET"], name="readyz")
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    loader = AppLoader(factory=create_app)
    app = loader.load()
    app.prepare(host=args.host, port=args.port, workers=args.workers, access_log=False, motd=False, backlog=1024)
    Sanic.serve(primary=app, app_loader=loader)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
