"""``/healthz``, ``/readyz`` and ``/metrics`` of the sink, served by the supervisor.

- ``/healthz``: 200 while the supervisor runs.
- ``/readyz``: 200 when every worker is alive and its consumers are running (as its
  metrics snapshot says) and no partition waits for its lock past ``--lock-timeout``,
  else 503 with the reason; a second line gives the consumer lag.
- ``/metrics``: Prometheus text, the supervisor's own registry merged with every
  worker's snapshot (:func:`footfall.metrics.collect`): totals over all workers,
  restarted ones included.

A small threaded ``http.server``: the supervisor is synchronous, and these endpoints
are scraped a few times a minute.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from footfall.errors import StartupError
from footfall.layout import partition_name
from footfall.metrics import LABEL_SEPARATOR, Registry, collect

__all__ = ["MetricsServer", "workers_ready"]


def _samples(snapshot: Any, name: str) -> dict[str, float]:
    samples: dict[str, float] = snapshot.get("metrics", {}).get(name, {}).get("samples", {})
    return samples


def _partition(key: str) -> str:
    topic, _, partition = key.partition(LABEL_SEPARATOR)
    return partition_name(topic, int(partition))


def workers_ready(metrics_dir: Path, pids: list[int], wanted: int, fatal: str | None = None) -> tuple[bool, str]:
    """(ready, reason) for ``/readyz``.

    Ready: all ``wanted`` workers alive and reporting ``footfall_sink_worker_ready``, and
    no partition waiting for its file lock past ``--lock-timeout``. The reason's first
    line says why not (or ``ready``); a second line gives the consumer lag
    (``footfall_sink_lag_records``) and its largest partitions.
    """
    if fatal is not None:
        return False, f"stopping: {fatal}"
    if len(pids) < wanted:
        return False, f"{len(pids)} of {wanted} workers alive (a stalled or dead worker is being restarted)"
    lag: dict[str, float] = {}
    blocked: list[str] = []
    for pid in pids:
        try:
            snap: Any = orjson.loads((metrics_dir / f"{pid}.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return False, f"worker {pid} has not reported yet"
        samples = _samples(snap, "footfall_sink_worker_ready")
        if not samples or max(samples.values()) < 1:
            return False, f"worker {pid} is not consuming"
        for key, value in _samples(snap, "footfall_sink_lag_records").items():
            if value > 0:
                lag[_partition(key)] = lag.get(_partition(key), 0) + value
        blocked += [
            _partition(key) for key, value in _samples(snap, "footfall_sink_lock_blocked_partitions").items() if value
        ]
    detail = f"lag {int(sum(lag.values()))} records"
    if lag:
        largest = sorted(lag.items(), key=lambda item: -item[1])[:5]
        detail += " (" + ", ".join(f"{tp} {int(n)}" for tp, n in largest) + ")"
    if blocked:
        return False, (
            f"{', '.join(sorted(blocked))}: waiting for the partition lock longer than --lock-timeout "
            f"(another process on this machine holds it; see the log)\n{detail}"
        )
    return True, f"ready\n{detail}"


class MetricsServer:
    """Serves the three endpoints on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics_dir: Path,
        registry: Registry,
        readiness: Callable[[], tuple[bool, str]],
    ) -> None:
        self.metrics_dir = metrics_dir
        self.registry = registry
        self.readiness = readiness
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ready, reason = server.readiness()
                    self._send(200 if ready else 503, reason.encode() + b"\n", "text/plain")
                elif path == "/metrics":
                    body = collect(server.metrics_dir, server.registry).encode()
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, b"not found: try /healthz /readyz /metrics\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes are not worth a log line

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise StartupError(
                f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror}; pick another port"
            ) from exc
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="sink-metrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError):
            self._httpd.server_close()
