"""One worker: a share of the simulated clients driving the web service from one event loop.

Modes (chosen by the settings):

* **ticking** (``--report-interval S`` > 0, the original client): every S seconds each client
  sends its current day — visits, then activities — and advances the day once both were
  acknowledged. A tick that comes while the previous one is still being sent is skipped and
  counted (``ticks_missed``), as Go's ``time.Ticker`` drops ticks.
* **closed loop** (``--report-interval 0``): each client sends again as soon as a response came
  (after a refused connection it pauses 50 ms, so a dead server is not hammered in a hot loop).
* **open model** (``--rate R``): requests arrive at a constant rate on a fixed schedule,
  whatever the responses; ``--concurrent-clients`` keep-alive connections serve them in
  arrival order and each latency is measured from the request's intended send time.

Delivery bookkeeping: every attempt that did not get a 2xx is recorded in the client's
ledger as failed, with whether the gateway may still have written it; every 2xx is recorded
as acknowledged. A request cut off by a forced stop counts as a failed attempt too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Final

import msgspec

from bench.client import KIND_CANCELLED, KIND_CONNECT, Connection, Outcome, WebService
from bench.latency import LatencyHistogram
from bench.ledger import ClientLedger
from bench.profiles import ClientData, Profile, compress_body
from bench.settings import BenchSettings
from footfall.backoff import Backoff, full_jitter
from footfall.reports import ReportType

__all__ = ["Snapshot", "Worker"]

log = logging.getLogger(__name__)

_PATHS: Final = {ReportType.VISIT: "/api/visit/v1", ReportType.ACTIVITY: "/api/activity/v1"}
_TYPES: Final = (ReportType.VISIT, ReportType.ACTIVITY)
_MAX_BACKOFF_S: Final = 30.0
_BACKOFF: Final = Backoff(first=0.05, cap=_MAX_BACKOFF_S)
_CONNECT_PAUSE_S: Final = 0.05


class Snapshot(msgspec.Struct, kw_only=True):
    """A worker's cumulative counters at one moment (sent between processes as msgpack)."""

    worker: int = 0
    requests: int = 0  # requests finished (a request = one POST with its retries)
    ok: int = 0
    failed: int = 0  # finished without a 2xx (cancelled ones included)
    cancelled: int = 0  # cut off by a forced stop: not counted in the error rate
    attempts: int = 0
    reports_sent: int = 0  # reports in finished requests
    reports_acked: int = 0
    bytes_sent: int = 0
    in_flight: int = 0
    ticks_missed: int = 0
    by_status: dict[str, int] = msgspec.field(default_factory=dict)  # failed attempts by HTTP status
    by_kind: dict[str, int] = msgspec.field(default_factory=dict)  # failed attempts by kind
    hist: str = ""  # encoded LatencyHistogram (filled only when crossing a process boundary)
    lag: str = ""  # encoded schedule-lag histogram (open model), likewise
    ledgers: list[dict[str, object]] | None = None  # filled in the final snapshot only


class _Client:
    """One simulated client's state in the closed and ticking modes."""

    __slots__ = ("bodies", "data", "day", "done", "index", "ledger")

    def __init__(self, index: int, data: ClientData) -> None:
        self.index = index
        self.data = data
        self.ledger = ClientLedger(index, str(data.user_id))
        self.day = 0
        self.bodies: dict[ReportType, tuple[bytes, int]] = {}  # the current day's, kept for resends
        self.done: set[ReportType] = set()  # types acknowledged for the current day


class Worker:
    """Drives the clients ``client_indices`` of a run; see the module docstring.

    Args:
        settings: the run's settings.
        profile: the data profile (seeded).
        client_indices: the global indices of this worker's clients.
        requests: request budget of this worker (0 = unlimited).
        rate: this worker's share of ``--rate`` (0 = closed/ticking mode).
    """

    def __init__(
        self,
        settings: BenchSettings,
        profile: Profile,
        client_indices: Sequence[int],
        *,
        worker_index: int = 0,
        requests: int = 0,
        rate: float = 0.0,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.stats = Snapshot(worker=worker_index)
        self.hist = LatencyHistogram()
        #: open model: how late the scheduler released each arrival (its own lateness, not the
        #: wait for a free connection). Large values mean the client itself could not keep
        #: the schedule (CPU-starved): latencies then include client delay.
        self.lag = LatencyHistogram()
        self._service = WebService(settings.web_service)
        self._indices = list(client_indices)
        self._clients: list[_Client] = []
        self._budget = requests if requests > 0 else -1
        self._rate = rate
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._heads = {t: self._service.request_head(_PATHS[t], gzip=settings.gzip) for t in _TYPES}
        self._jitter = random.Random(worker_index)  # backoff jitter only; not part of the data

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop issuing requests; requests in flight finish (see :meth:`run`'s drain)."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def force(self) -> None:
        """Cancel everything now; in-flight requests are recorded as failed (cancelled)."""
        self.stop()
        for task in self._tasks:
            task.cancel()

    @property
    def ledgers(self) -> list[ClientLedger]:
        """Every client's ledger (complete once :meth:`run` returned)."""
        return [c.ledger for c in self._clients]

    async def run(self) -> None:
        """Run until the budget, the duration or :meth:`stop`; then drain in-flight requests.

        Draining waits up to ``--shutdown-timeout``; what is still in flight after that is
        cancelled and recorded as failed.
        """
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        self._clients = [_Client(i, self.profile.client(i)) for i in self._indices]
        if not self._clients:
            return
        if self._rate > 0:
            self._tasks = [loop.create_task(self._open_model())]
        else:
            self._tasks = [loop.create_task(self._client_loop(c, n)) for n, c in enumerate(self._clients)]
        deadline = None
        if self.settings.duration > 0:
            deadline = loop.call_later(self.settings.duration, self.stop)
        all_done = loop.create_task(asyncio.wait(self._tasks))
        stop_wait = loop.create_task(self._stop_event.wait())
        try:
            # 1. Run until every client finished (budget) or a stop (duration, signal).
            await asyncio.wait([all_done, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            self.stop()
            # 2. Drain: requests in flight get --shutdown-timeout to finish.
            _, pending = await asyncio.wait(self._tasks, timeout=self.settings.shutdown_timeout)
            # 3. Cancel the rest; they are recorded as failed (cancelled).
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled requests still in flight after the drain timeout", extra={"tasks": len(pending)})
                await asyncio.wait(pending)
        finally:
            for helper in (all_done, stop_wait):
                helper.cancel()
            if deadline is not None:
                deadline.cancel()
            self.stop()
            for task in self._tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("client task failed", exc_info=task.exception())

    def _take(self) -> bool:
        """Take one request from the budget; False when the run must stop issuing."""
        if self._stopping:
            return False
        if self._budget == 0:
            return False
        if self._budget > 0:
            self._budget -= 1
        return True

    async def _sleep_until(self, when: float) -> None:
        """Sleep until loop time ``when`` or until stop, whichever comes first."""
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(when):
                await self._stop_event.wait()

    # -- one request ---------------------------------------------------------------------------

    def _body(self, client: _Client, report_type: ReportType, day: int) -> tuple[bytes, int]:
        raw, n_reports = client.data.encoded(report_type, day)
        body = compress_body(raw, gzip=self.settings.gzip)
        return self._heads[report_type] + b"%d\r\n\r\n" % len(body) + body, n_reports

    async def _send(
        self,
        conn: Connection,
        client: _Client,
        report_type: ReportType,
        day: int,
        data: bytes,
        n_reports: int,
        t0: float,
    ) -> Outcome:
        """POST with retries; record the outcome in the stats and the client's ledger.

        ``t0`` (``time.perf_counter()``) is where the latency is measured from: the actual
        send time in the closed and ticking modes, the intended one in the open model.
        """
        stats = self.stats
        retries = self.settings.retries
        attempt = 0
        outcome = Outcome(KIND_CANCELLED)
        posting = False
        try:
            while True:
                attempt += 1
                stats.attempts += 1
                stats.in_flight += 1
                posting = True
                try:
                    outcome = await conn.post(data)
                finally:
                    stats.in_flight -= 1
                posting = False
                if outcome.ok:
                    break
                client.ledger.fail(report_type, day, maybe_written=outcome.maybe_written)
                key = str(outcome.status) if outcome.status else outcome.kind
                target = stats.by_status if outcome.status else stats.by_kind
                target[key] = target.get(key, 0) + 1
                if attempt > retries or not outcome.retriable or self._stopping:
                    break
                await asyncio.sleep(self._backoff(attempt, outcome.retry_after))
        except asyncio.CancelledError:
            if posting:  # the server may have acted on the cut-off attempt
                client.ledger.fail(report_type, day)
            stats.by_kind[KIND_CANCELLED] = stats.by_kind.get(KIND_CANCELLED, 0) + 1
            stats.requests += 1
            stats.failed += 1
            stats.cancelled += 1
            stats.reports_sent += n_reports
            raise
        stats.requests += 1
        stats.reports_sent += n_reports
        stats.bytes_sent += len(data)
        if outcome.status:
            self.hist.record(time.perf_counter() - t0)
        if outcome.ok:
            client.ledger.ack(report_type, day)
            stats.ok += 1
            stats.reports_acked += n_reports
            return outcome
        stats.failed += 1
        return outcome

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server gave one, else exponential from 50 ms with full jitter."""
        if retry_after is not None:
            return min(retry_after, _MAX_BACKOFF_S)
        return full_jitter(_BACKOFF.delay(attempt), self._jitter)

    # -- closed loop and ticking ---------------------------------------------------------------

    async def _client_loop(self, client: _Client, position: int) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.report_interval
        conn = Connection(self._service, self.settings.timeout)
        # Spread the clients' ticks evenly over the interval instead of firing all at once.
        next_tick = loop.time() + interval * position / max(1, len(self._clients))
        try:
            while not self._stopping:
                if interval > 0:
                    await self._sleep_until(next_tick)
                    if self._stopping:
                        break
                for report_type in _TYPES:
                    if report_type in client.done:
                        continue
                    if not self._take():
                        return
                    cached = client.bodies.get(report_type)
                    if cached is None:
                        cached = client.bodies[report_type] = self._body(client, report_type, client.day)
                    data, n_reports = cached
                    sent = time.perf_counter()
                    outcome = await self._send(conn, client, report_type, client.day, data, n_reports, sent)
                    if not outcome.ok:
                        if outcome.kind == KIND_CONNECT and interval == 0:
                            # Nothing listens: don't spin the closed loop on instant refusals.
                            await self._sleep_until(loop.time() + _CONNECT_PAUSE_S)
                        break
                    client.done.add(report_type)
                if len(client.done) == len(_TYPES):
                    client.day += 1
                    client.done.clear()
                    client.bodies.clear()
                if interval > 0:
                    next_tick += interval
                    now = loop.time()
                    if now > next_tick:
                        missed = int((now - next_tick) / interval) + 1
                        self.stats.ticks_missed += missed
                        next_tick += missed * interval
        finally:
            conn.close()

    # -- open model ----------------------------------------------------------------------------

    async def _open_model(self) -> None:
        """Schedule arrivals at ``rate``/s; connections serve them in arrival order.

        Arrival ``i`` carries report type ``i % 2`` (visit, activity) of day
        ``(i // 2) // n`` of client ``(i // 2) % n``, so each client's draws stay in order.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        # This worker's share of --concurrent-clients is its number of connections.
        conns = [loop.create_task(self._open_connection(queue)) for _ in self._indices]
        self._tasks.extend(conns)
        rate = self._rate
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
        start = time.perf_counter()
        i = 0
        try:
            while True:
                now = time.perf_counter()
                due = int((now - start) * rate) + 1
                while i < due and self._take():
                    intended = start + i / rate
                    self.lag.record(now - intended)
                    queue.put_nowait((i, intended))
                    i += 1
                if self._stopping or self._budget == 0:
                    break
                # Sleep to the next arrival, but at least 1 ms (batches arrivals at high rates)
                # and at most 50 ms (to notice stop).
                delay = start + i / rate - time.perf_counter()
                await asyncio.sleep(min(max(delay, 0.001), 0.05))
        finally:
            # On stop, arrivals not yet taken by a connection were never sent: drop them.
            # (An exhausted budget lets the queued ones go out.)
            while self._stopping and not queue.empty():
                queue.get_nowait()
            for _ in conns:
                queue.put_nowait(None)
            await asyncio.wait(conns)

    async def _open_connection(self, queue: asyncio.Queue[tuple[int, float] | None]) -> None:
        conn = Connection(self._service, self.settings.timeout)
        n = len(self._clients)
        try:
            while (item := await queue.get()) is not None:
                i, intended = item
                pair = i // 2
                client = self._clients[pair % n]
                day = pair // n
                report_type = _TYPES[i % 2]
                data, n_reports = self._body(client, report_type, day)
                await self._send(conn, client, report_type, day, data, n_reports, intended)
        finally:
            conn.close()
