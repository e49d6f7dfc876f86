"""The HTTP protocol: Sanic's, with request deadlines that a slow client cannot stretch.

Sanic measures its request and response timeouts from the *last byte received*, so a client
that sends one byte a second keeps a connection (and a file descriptor) forever: slowloris.
Here the clock starts at a request's first byte and is not reset by further bytes, so
``--client-timeout`` bounds the time to receive headers and body, whatever the pace.
A body still arriving when it runs out gets 408 (the client's fault), not Sanic's 503
response timeout.
"""

from __future__ import annotations

from time import monotonic

from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.server.protocols.http_protocol import HttpProtocol

__all__ = ["DeadlineHttpProtocol"]


class DeadlineHttpProtocol(HttpProtocol):  # type: ignore[misc]
    """Restart the timeout clock only when a new request begins (connection idle)."""

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
