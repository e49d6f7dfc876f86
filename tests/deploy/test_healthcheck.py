"""``footfall-healthcheck`` (deploy/healthcheck.py): exit 0 only on HTTP 200."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("footfall_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/healthz": 200, "/readyz": 503}.get(self.path, 404)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_200_is_healthy(server: str) -> None:
    assert _load().main(["footfall-healthcheck", f"{server}/healthz"]) == 0


@pytest.mark.parametrize("path", ["/readyz", "/missing"])
def test_other_status_is_unhealthy(server: str, path: str) -> None:
    assert _load().main(["footfall-healthcheck", f"{server}{path}"]) == 1


def test_url_from_the_environment(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOOTFALL_HEALTHCHECK_URL", f"{server}/healthz")
    assert _load().main(["footfall-healthcheck"]) == 0


def test_refused_connection_and_bad_scheme_are_unhealthy() -> None:
    module = _load()
    assert module.main(["footfall-healthcheck", "http://127.0.0.1:1/healthz"]) == 1
    assert module.main(["footfall-healthcheck", "file:///etc/passwd"]) == 1
