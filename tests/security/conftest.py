"""Fixtures of the hostile-input suite: a real gateway (and dashboard) on loopback, raw sockets to attack them.

Everything goes through real TCP connections to real processes (``python -m gateway``),
never a test client, so the HTTP parser, the timeouts and the worker processes are the
ones production runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack.broker import EmbeddedBroker
from stack.processes import Stack, StackConfig
from tests.faults.harness import group_pids, rss_bytes

API_KEY = "ff-test-key-6c1d0e9a4b7f"  # a value that must never show up in a log
DASHBOARD_AUTH = ("analyst", "ff-test-password-93be2c")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> Response | None:
    """Send ``data`` on a fresh connection and read one response; ``None`` if the server closed without one."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer (413) and close before reading everything
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None if not buf else _parse(buf, started)
            buf += chunk
        _head, _, body = buf.partition(b"\r\n\r\n")
        response = _parse(buf, started)
        if data.split(b" ", 1)[0] == b"HEAD" or response.status in (204, 304) or response.status < 200:
            return response  # no body follows
        length = int(response.headers.get("content-length", "0") or 0)
        while len(body) < length:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            body += chunk
        response.body = body
        return response


def _parse(buf: bytes, started: float) -> Response:
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"not an HTTP response: {buf[:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(parts[1]), headers, b"", time.monotonic() - started)


class Target:
    """A running gateway: its port, process group and memory."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.port = stack.ports["gateway"]
        self.url = stack.gateway_url

    def pids(self) -> set[int]:
        return set(group_pids(self.stack.processes["gateway"].pid))

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def log(self) -> str:
        path = self.stack.log_directory / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _gateway(root: Path, *args: str) -> Iterator[Target]:
    with EmbeddedBroker(log_path=root / "broker.log") as broker:
        stack = Stack(
            StackConfig(
                record_directory=root / "records",
                brokers=broker.bootstrap,
                log_directory=root / "logs",
                dashboard=False,
                gateway_args=args,
            )
        )
        try:
            stack.start_role("gateway")
            yield Target(stack)
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A gateway (2 workers, embedded broker) with default settings; shared by a module's tests."""
    yield from _gateway(tmp_path_factory.mktemp("gateway"))


#: The timeouts of ``strict_gateway``: short, so cut-offs are observed in seconds, not minutes.
STRICT_CLIENT_TIMEOUT = 4
STRICT_KEEP_ALIVE_TIMEOUT = 4


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A gateway with short ``--client-timeout`` and ``--keep-alive-timeout``."""
    yield from _gateway(
        tmp_path_factory.mktemp("strict"),
        "--client-timeout",
        str(STRICT_CLIENT_TIMEOUT),
        "--keep-alive-timeout",
        str(STRICT_KEEP_ALIVE_TIMEOUT),
    )


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A gateway requiring an API key, logging every request (``--access-log``, debug level)."""
    yield from _gateway(tmp_path_factory.mktemp("keyed"), "--api-key", API_KEY, "--access-log", "--log-level", "debug")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
