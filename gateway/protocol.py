"""The HTTP protocol: Sanic's, with request deadlines that a slow client cannot stretch, and a drain.

Sanic measures its request and response timeouts from the *last byte received*, so a client
that sends one byte a second keeps a connection (and a file descriptor) forever: slowloris.
Here the clock starts at a request's first byte and is not reset by further bytes, so
``--client-timeout`` bounds the time to receive headers and body, whatever the pace.
A body still arriving when it runs out gets 408 (the client's fault), not Sanic's 503
response timeout.

Drain on stop: when a worker stops, Sanic closes its listener and calls ``close_if_idle`` once
per connection, then waits up to ``--shutdown-timeout`` for the connections to go and aborts
the rest. A busy keep-alive connection would go on taking requests until that abort cut them.
Here, from that call on:

1. every request whose headers are read is answered with ``Connection: close``
   (``KEEP_ALIVE`` off: Sanic reads it after each request's headers);
2. a connection busy with a request (or with its bytes already buffered) is answered with
   ``Connection: close`` and then closed by Sanic;
3. an idle connection stays open for :data:`_IDLE_GRACE` seconds, so a request its client
   sent at that moment is answered (with ``Connection: close``), not reset; then it is closed.

New connections are refused meanwhile: the shared listening socket is shut down when the whole
gateway stops (``gateway.lifecycle.before_stop``).
"""

from __future__ import annotations

from time import monotonic
from typing import Final

from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.server.protocols.http_protocol import HttpProtocol

__all__ = ["DeadlineHttpProtocol"]

#: How long a connection idle when the worker stops may still bring one last request.
_IDLE_GRACE: Final = 0.5


class DeadlineHttpProtocol(HttpProtocol):  # type: ignore[misc]
    """Restart the timeout clock only when a new request begins (connection idle); drain on stop."""

    def close_if_idle(self) -> bool:
        """Sanic's stop: end this connection after its current or next request (module docstring)."""
        self.app.config.KEEP_ALIVE = False  # 1.
        if self._busy():
            self._http.keep_alive = False  # 2.
            return False
        self.loop.call_later(_IDLE_GRACE, self._close_unless_busy)  # 3. (called between loop runs)
        return False

    def _busy(self) -> bool:
        http = getattr(self, "_http", None)
        return http is not None and (http.stage is not Stage.IDLE or bool(http.recv_buffer))

    def _close_unless_busy(self) -> None:
        if self._busy():
            self._http.keep_alive = False  # a last request came: closed after its answer
        else:
            self.close()

    def data_received(self, data: bytes) -> None:
        http = getattr(self, "_http", None)
        stage = http.stage if http is not None else Stage.IDLE
        started = self._time
        super().data_received(data)
        if stage is not Stage.IDLE:
            self._time = started  # mid-request: more bytes do not buy more time
        else:
            self._time = monotonic()

    def check_timeouts(self) -> None:
        http = getattr(self, "_http", None)
        if (
            self._task
            and http is not None
            and http.stage is Stage.HANDLER
            and http.request_body  # the body is still being received
            and monotonic() - self._time > self.request_timeout
        ):
            http.exception = RequestTimeout("Request Timeout: the body did not arrive within --client-timeout")
            self._task.cancel("request body too slow")
            return
        super().check_timeouts()  # type: ignore[no-untyped-call]
