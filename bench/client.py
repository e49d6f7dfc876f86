"""A minimal HTTP/1.1 keep-alive client on asyncio's Protocol API, built for low CPU per request.

A load generator must never be the bottleneck: a general client (aiohttp) spends far more
CPU per request than the gateway it measures. The bench needs one thing only — POST a
prepared body on a persistent connection and read status, a few headers and the body — so
this module writes the request bytes itself and parses just enough of the response:
status line, ``Content-Length`` / ``Transfer-Encoding: chunked``, ``Connection: close``,
``Retry-After`` and, for an error, the gateway's error code (``"error"`` of its JSON body).
One request in flight per connection (no pipelining), as a real client.

Delivery semantics: a POST is never resent by this module. A failure is reported as an
:class:`Outcome` with a ``kind``; the caller decides about retries and records each failed
attempt, noting whether the server may have acted on it (:attr:`Outcome.maybe_written`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import urllib.parse
import weakref
from typing import Final, NamedTuple, cast

from footfall.errors import ConfigError

__all__ = [
    "KIND_CANCELLED",
    "KIND_CONNECT",
    "KIND_DISCONNECT",
    "KIND_HTTP",
    "KIND_OK",
    "KIND_PROTOCOL",
    "KIND_TIMEOUT",
    "Connection",
    "Outcome",
    "WebService",
]

#: Outcome kinds. ``http`` = a response arrived with a non-2xx status.
KIND_OK: Final = "ok"
KIND_HTTP: Final = "http"
KIND_CONNECT: Final = "connect"
KIND_TIMEOUT: Final = "timeout"
KIND_DISCONNECT: Final = "disconnect"
KIND_PROTOCOL: Final = "protocol"
KIND_CANCELLED: Final = "cancelled"

_MAX_HEAD: Final = 64 * 1024


def _header(head: bytes, key: bytes) -> bytes | None:
    """The stripped value of header ``key`` (``b"\\r\\nname:"``, lower case) in a lower-cased head."""
    i = head.find(key)
    if i < 0:
        return None
    i += len(key)
    j = head.find(b"\r\n", i)
    return head[i : j if j >= 0 else len(head)].strip()


#: 503 codes the gateway answers before it hands anything to Kafka (its in-flight cap, the broker
#: known down): such an attempt cannot have landed. Other 503s (a produce that timed out or
#: failed) may have landed some or all of the request.
_REFUSED_503: Final = frozenset({"saturated", "broker_unreachable"})
_ERROR_CODE: Final = re.compile(rb'"error"\s*:\s*"([A-Za-z0-9_]{1,64})"')


def _error_code(body: bytes) -> str:
    """The ``"error"`` code of a gateway error body (``""`` if there is none)."""
    m = _ERROR_CODE.search(body, 0, 4096)
    return m[1].decode() if m else ""


class Outcome(NamedTuple):
    """How one request ended. ``status`` is 0 when no response arrived."""

    kind: str
    status: int = 0
    retry_after: float | None = None
    error: str = ""  # the gateway's error code, for an error response with a JSON body

    @property
    def maybe_written(self) -> bool:
        """False when the gateway certainly wrote nothing of a failed attempt.

        Nothing was sent (connection refused), or the gateway refused the request before
        producing: any 4xx (it validates first), a 503 ``saturated`` / ``broker_unreachable``.
        Everything else (a timeout, a dropped connection, another 5xx) may have landed.
        """
        if self.kind == KIND_CONNECT:
            return False
        if self.kind == KIND_HTTP:
            return not (400 <= self.status < 500 or (self.status == 503 and self.error in _REFUSED_503))
        return self.kind != KIND_OK

    @property
    def ok(self) -> bool:
        """True for a 2xx response: the gateway acknowledged every report of the request."""
        return self.kind == KIND_OK

    @property
    def retriable(self) -> bool:
        """Worth retrying: transport failures, 429 and 5xx (never other 4xx: the client's fault)."""
        if self.kind == KIND_HTTP:
            return self.status == 429 or self.status >= 500
        return self.kind in {KIND_CONNECT, KIND_TIMEOUT, KIND_DISCONNECT}


class WebService:
    """Where requests go: parsed once from ``--web-service``.

    Raises:
        ConfigError: the URL is not ``http(s)://host[:port][/prefix]``.
    """

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"--web-service (env FOOTFALL_BENCH_WEB_SERVICE): expected http(s)://host[:port], got {url!r}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"--web-service (env FOOTFALL_BENCH_WEB_SERVICE): bad port in {url!r}") from exc
        self.url = url
        self.host: str = parts.hostname
        self.port: int = port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"

    def request_head(self, path: str, *, gzip: bool) -> bytes:
        """The constant part of a POST's head, up to (not including) the Content-Length value."""
        encoding = "Content-Encoding: gzip\r\n" if gzip else ""
        return (
            f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"User-Agent: footfall-bench\r\nContent-Type: application/json\r\n{encoding}Content-Length: "
        ).encode("ascii")

    async def probe(self, within: float) -> None:
        """Open and close one TCP connection, to fail fast with a clear message.

        Raises:
            WebServiceError: refused, unresolvable or timed out.
        """
        from bench.errors import WebServiceError

        try:
            async with asyncio.timeout(within):
                _, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise WebServiceError(
                f"cannot reach the web service at {self.url}: {reason} (is the gateway running?)"
            ) from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _Wire(asyncio.Protocol):
    """The protocol object of one transport; events of a replaced transport are ignored."""

    __slots__ = ("_conn", "transport")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its API.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._conn._wire is self:
            self._conn._lost()

    def data_received(self, data: bytes) -> None:
        if self._conn._wire is self:
            self._conn._data(data)


class _Sweeper:
    """Times requests out in sweeps every ``_SWEEP_S`` instead of a timer per request.

    A timer per request (``call_at`` + ``cancel``) costs more than a set insert and removal,
    and this runs for every request; a timeout may fire up to one sweep late.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: set[Connection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, conn: Connection) -> None:
        self._pending.add(conn)
        if self._handle is None:
            self._handle = self._loop.call_later(_SWEEP_S, self._sweep)

    def discard(self, conn: Connection) -> None:
        self._pending.discard(conn)

    def _sweep(self) -> None:
        now = self._loop.time()
        for conn in [c for c in self._pending if c._deadline <= now]:
            conn._on_timeout()
        self._handle = self._loop.call_later(_SWEEP_S, self._sweep) if self._pending else None


_SWEEP_S: Final = 0.02
_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = weakref.WeakKeyDictionary()


class Connection:
    """One keep-alive HTTP/1.1 connection; :meth:`post` sends a request and awaits its outcome."""

    def __init__(self, service: WebService, timeout: float) -> None:
        self._service = service
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        sweeper = _SWEEPERS.get(self._loop)
        if sweeper is None:
            sweeper = _SWEEPERS[self._loop] = _Sweeper(self._loop)
        self._sweeper = sweeper
        self._deadline = 0.0
        self._wire: _Wire | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[Outcome] | None = None
        # Response parse state.
        self._status = 0
        self._need = -1  # body bytes still expected; -1 = in the head, -2 = chunked
        self._close_after = False
        self._retry_after: float | None = None
        self._error = ""

    def _lost(self) -> None:
        self._wire = None
        self._transport = None
        self._finish(Outcome(KIND_DISCONNECT))

    def _data(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection is out of step; drop it.
            self.close()
            return
        self._buf += data
        try:
            self._parse()
        except (ValueError, IndexError):
            self._finish(Outcome(KIND_PROTOCOL))
            self.close()

    # -- requests -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the transport is open (a POST can go out without reconnecting)."""
        return self._transport is not None and not self._transport.is_closing()

    async def post(self, data: bytes) -> Outcome:
        """Send ``data`` (head + body) and wait for the response, connecting first if needed.

        The deadline (``timeout``) covers connect, send and the whole response. On a
        timeout or a protocol error the connection is closed, so a late response can never
        be taken for the next request's.
        """
        deadline = self._loop.time() + self._timeout
        if not self.connected:
            try:
                wire = _Wire(self)
                async with asyncio.timeout_at(deadline):
                    await self._loop.create_connection(
                        lambda: wire, self._service.host, self._service.port, ssl=self._service.ssl
                    )
                self._wire, self._transport = wire, wire.transport
            except TimeoutError:
                return Outcome(KIND_TIMEOUT)
            except OSError:
                return Outcome(KIND_CONNECT)
        assert self._transport is not None
        waiter: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiter = waiter
        self._status, self._need, self._close_after, self._retry_after, self._error = 0, -1, False, None, ""
        self._buf.clear()
        self._deadline = deadline
        self._sweeper.add(self)
        self._transport.write(data)
        try:
            return await waiter
        except asyncio.CancelledError:
            self._finish(Outcome(KIND_CANCELLED))
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (idempotent); a pending request ends as ``disconnect``."""
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self._wire = None

    def _on_timeout(self) -> None:
        self._finish(Outcome(KIND_TIMEOUT))
        self.close()

    def _finish(self, outcome: Outcome) -> None:
        waiter, self._waiter = self._waiter, None
        self._sweeper.discard(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def _parse(self) -> None:
        buf = self._buf
        if self._need == -1:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("response head too large")
                return
            # Byte searches on the lower-cased head, not a header dict: this runs per request.
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            if not head.startswith(b"http/1."):
                raise ValueError("not HTTP/1.x")
            self._status = int(head[9:12])
            connection = _header(head, b"\r\nconnection:")
            self._close_after = connection == b"close" if connection is not None else head[7:8] == b"0"
            length = _header(head, b"\r\ncontent-length:")
            if length is not None:
                self._need = int(length)
            else:
                encoding = _header(head, b"\r\ntransfer-encoding:")
                self._need = -2 if encoding is not None and b"chunked" in encoding else 0
            if self._status >= 300:
                retry_after = _header(head, b"\r\nretry-after:")
                if retry_after is not None:
                    with contextlib.suppress(ValueError):
                        self._retry_after = max(0.0, float(retry_after))
        if self._need == -2:
            if not self._consume_chunks():
                return
        elif len(buf) < self._need:
            return
        else:
            if self._status >= 300:
                self._error = _error_code(bytes(buf[: self._need]))
            del buf[: self._need]
        status = self._status
        outcome = Outcome(KIND_OK if 200 <= status < 300 else KIND_HTTP, status, self._retry_after, self._error)
        if self._close_after:
            self.close()
        self._finish(outcome)

    def _consume_chunks(self) -> bool:
        """Drop complete chunks from the buffer; True once the last (0-size) chunk and trailers are in."""
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    return False
                del buf[: end + 4]
                return True
            if len(buf) < eol + 2 + size + 2:
                return False
            del buf[: eol + 2 + size + 2]
