"""Slow clients: a request trickled byte by byte is cut off at --client-timeout (408), idle
connections at --keep-alive-timeout, and an honest client on another connection is unaffected."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.gateway.conftest import GatewayProcess, original_body

pytestmark = pytest.mark.integration


def _trickle_until_closed(sock: socket.socket, byte: bytes, limit: float) -> tuple[float, bytes]:
    """Send ``byte`` every 0.2 s until the server answers or closes; return (seconds, answer)."""
    sock.setblocking(False)
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
        except BlockingIOError:
            pass
        try:
            if byte:
                sock.send(byte)
        except OSError:
            break
        time.sleep(0.2)
    return time.monotonic() - started, answer


def test_trickled_headers_body_and_idle_connections_are_cut_off(
    broker: str, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    gw = gateway_factory(["--brokers", broker, "--workers", "1", "--client-timeout", "2", "--keep-alive-timeout", "2"])
    headers = socket.create_connection(("127.0.0.1", gw.port))
    headers.sendall(b"POST /api/visit/v1 HTTP/1.1\r\nHost: x\r\n")
    elapsed, answer = _trickle_until_closed(headers, b"X", 20)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert elapsed < 6, f"trickled headers lasted {elapsed:.1f}s with --client-timeout 2"

    body = socket.create_connection(("127.0.0.1", gw.port))
    body.sendall(
        b"POST /api/visit/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    elapsed, answer = _trickle_until_closed(body, b"[", 20)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]  # the client's fault: never a 5xx
    assert elapsed < 6, f"trickled body lasted {elapsed:.1f}s with --client-timeout 2"

    idle = socket.create_connection(("127.0.0.1", gw.port))
    elapsed, answer = _trickle_until_closed(idle, b"", 20)
    assert answer == b"" and elapsed < 6, f"idle connection open {elapsed:.1f}s with --keep-alive-timeout 2"

    # A request that takes a while but finishes within the deadline is served normally.
    payload, _ = original_body("visit", seed=3)  # gzip'd, as the original client sends it
    honest = socket.create_connection(("127.0.0.1", gw.port))
    honest.sendall(
        b"POST /api/visit/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
    )
    for i in range(0, len(payload), len(payload) // 4 + 1):
        honest.sendall(payload[i : i + len(payload) // 4 + 1])
        time.sleep(0.2)
    honest.settimeout(10)
    assert honest.recv(4096).startswith(b"HTTP/1.1 200")
    assert httpx.get(gw.url + "/healthz").status_code == 200
