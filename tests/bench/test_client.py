"""The minimal HTTP/1.1 client against scripted raw servers: framing, keep-alive, errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from bench.client import KIND_CONNECT, KIND_DISCONNECT, KIND_HTTP, KIND_OK, KIND_TIMEOUT, Connection, WebService
from bench.errors import WebServiceError
from footfall.errors import ConfigError

Reply = Callable[[bytes], bytes | None]


@contextlib.asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server answering each request (read up to the end of its body) with ``reply(request)``."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                seen.append(head + body)
                answer = reply(head + body)
                if answer is None:  # stay silent (timeout test)
                    await asyncio.sleep(30)
                    return
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


def request(service: WebService, body: bytes = b"[]") -> bytes:
    return service.request_head("/api/visit/v1", gzip=False) + b"%d\r\n\r\n" % len(body) + body


async def test_content_length_keep_alive_and_request_bytes() -> None:
    async with raw_server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as (url, seen):
        service = WebService(url + "/prefix")
        conn = Connection(service, timeout=5)
        for _ in range(3):
            outcome = await conn.post(request(service, b"[1]"))
            assert outcome.kind == KIND_OK and outcome.status == 200 and outcome.ok
        conn.close()
    assert len(seen) == 3
    first = seen[0].decode()
    assert first.startswith("POST /prefix/api/visit/v1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{url.rsplit(':', 1)[1]}\r\n" in first
    assert "Content-Type: application/json\r\n" in first
    assert "Content-Encoding" not in first
    assert first.endswith("Content-Length: 3\r\n\r\n[1]")


async def test_gzip_header() -> None:
    service = WebService("http://example.test")
    assert b"Content-Encoding: gzip\r\n" in service.request_head("/x", gzip=True)
    assert b"Host: example.test\r\n" in service.request_head("/x", gzip=True)


async def test_chunked_response_and_retry_after() -> None:
    answer = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nRetry-After: 2\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    async with raw_server(lambda _: answer) as (url, seen):
        service = WebService(url)
        conn = Connection(service, timeout=5)
        for _ in range(2):  # the second proves the first response was consumed exactly
            outcome = await conn.post(request(service))
            assert (outcome.kind, outcome.status, outcome.retry_after) == (KIND_HTTP, 503, 2.0)
            assert outcome.retriable
        conn.close()
    assert len(seen) == 2


async def test_response_split_across_packets_and_connection_close() -> None:
    async with raw_server(lambda _: b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") as (
        url,
        _,
    ):
        service = WebService(url)
        conn = Connection(service, timeout=5)
        outcome = await conn.post(request(service))
        assert (outcome.kind, outcome.status) == (KIND_HTTP, 400)
        assert not outcome.retriable  # the client's fault: never retried
        assert not conn.connected
        # The next request reconnects.
        assert (await conn.post(request(service))).status == 400


async def test_timeout_closes_the_connection() -> None:
    async with raw_server(lambda _: None) as (url, _):
        service = WebService(url)
        conn = Connection(service, timeout=0.2)
        outcome = await conn.post(request(service))
        assert outcome.kind == KIND_TIMEOUT and outcome.retriable
        assert not conn.connected


async def test_server_closing_mid_response_is_a_disconnect() -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    async with raw_server(lambda _: truncated) as (url, _):
        service = WebService(url)
        outcome = await Connection(service, timeout=5).post(request(service))
        assert outcome.kind == KIND_DISCONNECT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_connection_is_a_connect_error() -> None:
    service = WebService(f"http://127.0.0.1:{free_port()}")
    outcome = await Connection(service, timeout=2).post(request(service))
    assert outcome.kind == KIND_CONNECT
    with pytest.raises(WebServiceError, match=r"cannot reach the web service at http://127\.0\.0\.1"):
        await service.probe(2)


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://x", "http://", "http://h:notaport"])
def test_bad_web_service_url(url: str) -> None:
    with pytest.raises(ConfigError, match="--web-service"):
        WebService(url)
