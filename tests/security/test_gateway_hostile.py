"""Hostile clients against the running gateway: slow, idle, oversized, bombs, wrong keys.

Each test talks to ``python -m gateway`` over real sockets. The promises checked: honest
clients are still served promptly while hostile ones hold connections; hostile connections
are cut off within the server's timeouts; nothing answers 5xx, nothing kills a worker, and
memory stays bounded.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import statistics
import threading
import time
import uuid

import pytest

from tests.faults.harness import wait_for
from tests.security.conftest import (
    API_KEY,
    STRICT_CLIENT_TIMEOUT,
    STRICT_KEEP_ALIVE_TIMEOUT,
    Target,
    raw_request,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: The strict gateway's --client-timeout and --keep-alive-timeout.
REQUEST_TIMEOUT = float(STRICT_CLIENT_TIMEOUT)
KEEP_ALIVE_TIMEOUT = float(STRICT_KEEP_ALIVE_TIMEOUT)
#: Sanic checks a connection's timeouts every min(timeouts) / 2 seconds, so one may live this much longer.
TIMEOUT_CHECK_INTERVAL = min(REQUEST_TIMEOUT, KEEP_ALIVE_TIMEOUT) / 2


def _visits(n: int = 12) -> bytes:
    uid = str(uuid.uuid4())
    reports = [
        {
            "dataVer": 1, "userId": uid, "algorithmType": 3, "enterTime": 1514764800000 + i * 7_200_000,
            "exitTime": 1514767200000 + i * 7_200_000, "poiId": 42, "latitude": 41.38, "longitude": 2.17,
        }
        for i in range(n)
    ]  # fmt: skip
    return json.dumps(reports).encode()


def _post(body: bytes, *, headers: dict[str, str] | None = None, path: str = "/api/visit/v1") -> bytes:
    all_headers = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(len(body))}
    all_headers.update(headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items()) + "\r\n"
    return head.encode() + body


def _honest_latencies(target: Target, seconds: float) -> list[float]:
    """POST valid reports in a loop for ``seconds``; every answer must be 200. Returns latencies."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = raw_request(target.port, _post(_visits()), timeout=10)
        assert response is not None and response.status == 200, response
        latencies.append(response.elapsed)
    return latencies


class _Hostile:
    """Connections that hold the server: idle (nothing sent), slow headers, slow body (one byte at a time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[socket.socket] = []
        self.tricklers: list[tuple[socket.socket, bytes]] = []
        self.closed_at: dict[int, float] = {}
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self, idle: int, slow_headers: int, slow_bodies: int) -> None:
        for _ in range(idle):
            self.idle.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
        head = b"POST /api/visit/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        for _ in range(slow_headers):  # never finishes its headers: X-Pad lines, one byte at a time
            self.tricklers.append((socket.create_connection(("127.0.0.1", self.port), timeout=5), b"X-Pad: a\r\n"))
        body = _visits()
        for _ in range(slow_bodies):  # complete headers, then the body one byte at a time
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode())
            self.tricklers.append((sock, body))
        for sock in self.all():
            sock.setblocking(False)
        self._thread.start()

    def all(self) -> list[socket.socket]:
        return self.idle + [sock for sock, _ in self.tricklers]

    def _trickle(self) -> None:
        i = 0
        while not self._stop.wait(1.0):  # one byte per connection per second
            for sock, pattern in self.tricklers:
                if sock.fileno() in self.closed_at:
                    continue
                try:
                    sock.send(pattern[i % len(pattern) : i % len(pattern) + 1])
                except OSError:
                    self.closed_at[sock.fileno()] = time.monotonic() - self.started
            i += 1

    def poll_closed(self) -> None:
        """Note every connection the server has closed (EOF, reset, or an answer such as 408)."""
        for sock in self.all():
            fd = sock.fileno()
            if fd in self.closed_at:
                continue
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            self.closed_at[fd] = time.monotonic() - self.started
            del data

    def open_count(self) -> int:
        self.poll_closed()
        return sum(1 for sock in self.all() if sock.fileno() not in self.closed_at)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.all():
            with contextlib.suppress(OSError):
                sock.close()


def test_slow_and_idle_clients_do_not_starve_honest_ones(gateway: Target) -> None:
    """2000 idle connections and 200 trickling clients held open; honest POSTs still answered 200, promptly."""
    baseline = _honest_latencies(gateway, 2.0)
    pids = gateway.pids()
    rss_before = gateway.rss()
    hostile = _Hostile(gateway.port)
    try:
        hostile.open(idle=2000, slow_headers=100, slow_bodies=100)
        during = _honest_latencies(gateway, 8.0)
        still_open = hostile.open_count()
        rss_during = gateway.rss()
    finally:
        hostile.close()
    p50_before, p50_during = statistics.median(baseline), statistics.median(during)
    worst = max(during)
    print(
        f"honest POST latency p50 {p50_before * 1000:.1f} ms -> {p50_during * 1000:.1f} ms (max {worst * 1000:.1f} ms) "
        f"with {still_open} hostile connections open; "
        f"gateway RSS {rss_before / 2**20:.1f} -> {rss_during / 2**20:.1f} MiB"
    )
    assert len(during) >= 10, f"only {len(during)} honest requests in 8 s"
    p95 = statistics.quantiles(during, n=20)[-1]
    assert p95 < 1.0, f"honest requests: p95 {p95:.2f}s while hostile clients held connections"
    assert worst < 5.0, f"an honest request took {worst:.2f}s while hostile clients held connections"
    assert gateway.pids() == pids, "a gateway worker died while hostile clients held connections"
    per_connection = (rss_during - rss_before) / 2200
    assert per_connection < 64 * 1024, f"{per_connection:.0f} bytes of gateway memory per idle connection"


@pytest.mark.slow
def test_slow_and_idle_connections_are_cut_off(strict_gateway: Target) -> None:
    """Idle connections close after the keep-alive timeout; a request trickled byte by byte is cut off.

    A client that needs longer than the client timeout (--client-timeout) to send one request — headers
    or body, however steadily it dribbles — must be disconnected, or a few thousand such
    clients hold the gateway's connections (and file descriptors) forever (slowloris).
    """
    hostile = _Hostile(strict_gateway.port)
    try:
        hostile.open(idle=200, slow_headers=20, slow_bodies=20)
        n_idle = len(hostile.idle)
        deadline = KEEP_ALIVE_TIMEOUT + TIMEOUT_CHECK_INTERVAL + 10
        with contextlib.suppress(AssertionError):
            wait_for(lambda: hostile.open_count() == 0, deadline, "every hostile connection to be closed", 0.5)
        idle_closed = [hostile.closed_at.get(s.fileno()) for s in hostile.idle]
        trickle_closed = [hostile.closed_at.get(s.fileno()) for s, _ in hostile.tricklers]
    finally:
        hostile.close()
    idle_open = sum(t is None for t in idle_closed)
    trickle_open = sum(t is None for t in trickle_closed)
    print(
        f"after {deadline:.0f}s: idle connections still open {idle_open}/{n_idle}, "
        f"trickling requests still open {trickle_open}/{len(trickle_closed)}"
    )
    assert idle_open == 0, f"{idle_open} idle connections outlived the keep-alive timeout ({KEEP_ALIVE_TIMEOUT:g}s)"
    assert trickle_open == 0, (
        f"{trickle_open} requests trickled one byte per second were never cut off after {deadline:.0f}s "
        f"(request timeout {REQUEST_TIMEOUT:g}s is reset by every byte received: slowloris)"
    )


def test_oversized_headers_are_refused(gateway: Target) -> None:
    """A header line over 8 KiB, thousands of headers, a 64 KiB URL: a 4xx answer (or a close), never 5xx."""
    pids = gateway.pids()
    cases = {
        "one 16 KiB header": _post(_visits(), headers={"X-Big": "a" * 16384}),
        "2000 small headers": _post(_visits(), headers={f"X-H{i}": "v" for i in range(2000)}),
        "64 KiB URL": _post(_visits(), path="/api/visit/v1?" + "q" * 65536),
        "1 MiB of header bytes": b"POST /api/visit/v1 HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 2**20 + b"\r\n\r\n",
    }
    for name, data in cases.items():
        response = raw_request(gateway.port, data, timeout=10)
        status = None if response is None else response.status
        print(f"{name}: {status}")
        assert status is None or 400 <= status < 500, f"{name}: answered {status}"
        if response is not None:
            assert response.elapsed < 5, f"{name}: took {response.elapsed:.1f}s"
    assert gateway.pids() == pids
    assert raw_request(gateway.port, _post(_visits())).status == 200  # type: ignore[union-attr]


def test_body_limits_answer_413_without_reading_everything(gateway: Target) -> None:
    """Declared-huge bodies are refused from Content-Length; gzip bombs stop at the decompression cap."""
    pids = gateway.pids()
    rss_before = gateway.rss()
    # 1. 1 GiB announced, nothing sent: refused at once from the header.
    huge = _post(b"", headers={"Content-Length": str(2**30)})
    response = raw_request(gateway.port, huge, timeout=10)
    assert response is not None and response.status == 413, response
    assert response.elapsed < 2
    # 2. A gzip bomb: 1 GiB of zeros as ~1 MiB of gzip (under the 2 MiB as-sent limit).
    bomb = gzip.compress(b"[" + b" " * (2**30 - 2) + b"]", compresslevel=9)
    assert len(bomb) < 2 * 2**20
    started = time.monotonic()
    response = raw_request(gateway.port, _post(bomb, headers={"Content-Encoding": "gzip"}), timeout=20)
    assert response is not None and response.status == 413, response
    print(f"gzip bomb ({len(bomb)} bytes -> 1 GiB) refused in {time.monotonic() - started:.2f}s")
    # 3. Deeply nested JSON: a clear 400, not a crashed worker.
    deep = b"[" * 200_000 + b"]" * 200_000
    response = raw_request(gateway.port, _post(deep), timeout=10)
    assert response is not None and response.status in (400, 413, 422), response
    assert gateway.pids() == pids, "a worker died"
    growth = gateway.rss() - rss_before
    assert growth < 64 * 2**20, f"gateway memory grew {growth / 2**20:.0f} MiB handling bombs"


@pytest.mark.xfail(
    strict=True,
    reason="Sanic 25.12 closes the connection without an answer (and logs a traceback at ERROR) for a "
    "request target that is not a path, e.g. 'GET abc HTTP/1.1'; upstream behaviour, see docs/security.md",
)
def test_request_target_that_is_not_a_path_gets_400(gateway: Target) -> None:
    response = raw_request(gateway.port, b"GET abc HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response is not None and response.status == 400


def test_api_keys_are_required_and_never_logged(keyed_gateway: Target) -> None:
    """With --api-key: 401 without or with a wrong key, 200 with it; the key appears in no log line."""
    target = keyed_gateway
    body = _visits()
    assert raw_request(target.port, _post(body)).status == 401  # type: ignore[union-attr]
    wrong = raw_request(target.port, _post(body, headers={"Authorization": "Bearer " + API_KEY[:-1] + "x"}))
    assert wrong is not None and wrong.status == 401
    assert API_KEY[:-1].encode() not in wrong.body
    assert raw_request(target.port, _post(body, headers={"X-API-Key": "nope"})).status == 401  # type: ignore[union-attr]
    ok = raw_request(target.port, _post(body, headers={"Authorization": f"Bearer {API_KEY}"}))
    assert ok is not None and ok.status == 200, ok
    ok = raw_request(target.port, _post(body, headers={"X-API-Key": API_KEY}))
    assert ok is not None and ok.status == 200, ok
    # Probes and metrics stay open (load balancers and Prometheus carry no key)...
    assert raw_request(target.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status == 200  # type: ignore[union-attr]
    metrics = raw_request(target.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert metrics is not None and metrics.status == 200
    assert API_KEY.encode() not in metrics.body
    # ...and the key is in no log line, whatever the log level (debug + access log here).
    wait_for(lambda: "request" in target.log(), 10, "the access log lines")
    log = target.log()
    assert API_KEY not in log and API_KEY[:-1] not in log, "an API key was written to the gateway log"
