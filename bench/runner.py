"""A whole run: resolve the seed, probe the web service, spread clients over processes, collect.

With ``--processes 1`` the worker runs in this process. With K > 1, K worker processes
(``spawn``) each take every K-th client (client ``i`` goes to worker ``i % K``, so the data
is the same whatever K), an equal share of ``--requests`` and ``--rate``, and send their
cumulative counters to this process four times a second over a pipe; the last message carries
their ledgers. Workers ignore SIGINT (a terminal's Ctrl+C reaches the whole process group);
this process turns the first SIGINT/SIGTERM into "stop" (drain and finish) and a second into
"force" (cancel what is in flight), for every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import multiprocessing
import multiprocessing.connection
import random
import signal
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import msgspec

from bench.client import WebService
from bench.identity import new_run_id
from bench.latency import LatencyHistogram
from bench.profiles import make_profile
from bench.settings import BenchSettings
from bench.worker import Snapshot, Worker
from footfall.signals import LoopSignals

__all__ = ["RunResult", "mode_of", "resolve_seed", "run"]

log = logging.getLogger(__name__)

_SNAPSHOT_INTERVAL_S: Final = 0.25
_SUMMED: Final = (
    "requests",
    "ok",
    "failed",
    "cancelled",
    "attempts",
    "reports_sent",
    "reports_acked",
    "bytes_sent",
    "in_flight",
    "ticks_missed",
)


class RunResult(msgspec.Struct, kw_only=True):
    """What a run produced: totals, latencies, ledgers, and how it ended."""

    settings: BenchSettings
    seed: int
    run_id: int  # derived into the userIds (bench.identity): tells this run's reports from others'
    started_at: str
    elapsed_s: float
    totals: Snapshot
    hist: LatencyHistogram
    lag: LatencyHistogram  # open model: how late requests went out (client-side delay)
    ledgers: list[dict[str, Any]]
    interrupted: bool = False
    workers_lost: int = 0


def mode_of(settings: BenchSettings) -> str:
    """``open``, ``closed`` or ``ticking``."""
    if settings.rate > 0:
        return "open"
    return "closed" if settings.report_interval == 0 else "ticking"


def resolve_seed(settings: BenchSettings) -> int:
    """The run's seed: ``--seed``, or a fresh one (printed, and written to the run file)."""
    return settings.seed if settings.seed >= 0 else random.SystemRandom().randrange(2**31)


def merge(snapshots: list[Snapshot]) -> Snapshot:
    """Sum the workers' counters (histograms are merged separately)."""
    total = Snapshot(worker=-1)
    for snap in snapshots:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(snap, name))
        for src, dst in ((snap.by_status, total.by_status), (snap.by_kind, total.by_kind)):
            for key, n in src.items():
                dst[key] = dst.get(key, 0) + n
    return total


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


Progress = Callable[[], tuple[Snapshot, LatencyHistogram]]


async def run(
    settings: BenchSettings,
    seed: int,
    on_start: Callable[[Progress], None] | None = None,
    *,
    run_id: int | None = None,
) -> RunResult:
    """Run the load described by ``settings`` to its end (budget, duration or signal).

    Args:
        settings: the run's settings.
        seed: the resolved seed (:func:`resolve_seed`).
        on_start: called once the workers run, with a function returning the current totals
            and latency histogram (for live progress).
        run_id: the run id the userIds derive from (:mod:`bench.identity`); a fresh random
            one by default, so no two runs share userIds even with one seed.

    Raises:
        ConfigError: bad settings (web service URL, profile).
        WebServiceError: the web service is unreachable at start.
    """
    service = WebService(settings.web_service)
    run_id = new_run_id() if run_id is None else run_id
    make_profile(settings.profile, seed, settings.start_date, run_id)  # validate before probing
    await service.probe(min(settings.timeout, 10.0))
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    t0 = time.monotonic()
    # No more processes than clients, nor than requests (a worker's budget share of 0 would mean "unlimited").
    processes = min(settings.processes, settings.concurrent_clients, settings.requests or settings.processes)
    if processes == 1:
        outcome = await _run_here(settings, seed, run_id, on_start)
    else:
        outcome = await _run_spread(settings, seed, run_id, processes, on_start)
    return RunResult(
        settings=settings,
        seed=seed,
        run_id=run_id,
        started_at=started_at,
        elapsed_s=time.monotonic() - t0,
        **outcome._asdict(),
    )


class _Outcome(NamedTuple):
    """What the workers produced (the rest of a :class:`RunResult` is known before they start)."""

    totals: Snapshot
    hist: LatencyHistogram
    lag: LatencyHistogram
    ledgers: list[dict[str, Any]]
    interrupted: bool
    workers_lost: int = 0


async def _run_here(
    settings: BenchSettings, seed: int, run_id: int, on_start: Callable[[Progress], None] | None
) -> _Outcome:
    profile = make_profile(settings.profile, seed, settings.start_date, run_id)
    worker = Worker(
        settings,
        profile,
        range(settings.concurrent_clients),
        requests=settings.requests,
        rate=settings.rate,
    )
    if on_start is not None:
        on_start(lambda: (worker.stats, worker.hist))
    with LoopSignals(worker.stop, worker.force) as signals:
        await worker.run()
    return _Outcome(
        totals=merge([worker.stats]),
        hist=worker.hist,
        lag=worker.lag,
        ledgers=[ledger.to_json() for ledger in worker.ledgers],
        interrupted=signals.count > 0,
    )


# -- several processes ------------------------------------------------------------------------


def _child_main(settings_json: bytes, seed: int, run_id: int, worker_index: int, processes: int, conn: Any) -> None:
    """Entry point of a worker process (``spawn``): run one worker, report over ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = msgspec.json.decode(settings_json, type=BenchSettings)
    from footfall.logs import configure_logging

    configure_logging(settings.log_level, "bench")
    try:
        import uvloop

        uvloop.run(_child_async(settings, seed, run_id, worker_index, processes, conn))
    finally:
        conn.close()


async def _child_async(
    settings: BenchSettings, seed: int, run_id: int, worker_index: int, processes: int, conn: Any
) -> None:
    loop = asyncio.get_running_loop()
    profile = make_profile(settings.profile, seed, settings.start_date, run_id)
    worker = Worker(
        settings,
        profile,
        range(worker_index, settings.concurrent_clients, processes),
        worker_index=worker_index,
        requests=_shares(settings.requests, processes)[worker_index] if settings.requests else 0,
        rate=settings.rate / processes,
    )

    def on_command() -> None:
        try:
            command = conn.recv_bytes()
        except (EOFError, OSError):
            command = b"force"  # the parent is gone: stop at once
            loop.remove_reader(conn.fileno())
        if command == b"stop":
            worker.stop()
        elif command == b"force":
            worker.force()

    def snapshot(final: bool) -> bytes:
        snap = msgspec.structs.replace(worker.stats, hist=worker.hist.encode(), lag=worker.lag.encode())
        if final:
            snap.ledgers = [ledger.to_json() for ledger in worker.ledgers]
        return msgspec.msgpack.encode(snap)

    async def report() -> None:
        while True:
            await asyncio.sleep(_SNAPSHOT_INTERVAL_S)
            conn.send_bytes(snapshot(final=False))

    loop.add_reader(conn.fileno(), on_command)
    reporter = loop.create_task(report())
    try:
        await worker.run()
    finally:
        reporter.cancel()
        with contextlib.suppress(OSError):
            loop.remove_reader(conn.fileno())
    conn.send_bytes(snapshot(final=True))


async def _run_spread(
    settings: BenchSettings, seed: int, run_id: int, processes: int, on_start: Callable[[Progress], None] | None
) -> _Outcome:
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    settings_json = msgspec.json.encode(settings)
    latest: list[Snapshot] = [Snapshot(worker=k) for k in range(processes)]
    hists: list[LatencyHistogram] = [LatencyHistogram() for _ in range(processes)]
    lags: list[LatencyHistogram] = [LatencyHistogram() for _ in range(processes)]
    finals: dict[int, Snapshot] = {}
    ended: dict[int, asyncio.Future[None]] = {}
    pipes: list[multiprocessing.connection.Connection] = []
    children: list[Any] = []
    for k in range(processes):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main, args=(settings_json, seed, run_id, k, processes, child_end), name=f"bench-worker-{k}"
        )
        proc.start()
        child_end.close()
        pipes.append(parent_end)
        children.append(proc)
        ended[k] = loop.create_future()

    def on_message(k: int) -> None:
        pipe = pipes[k]
        try:
            snap = msgspec.msgpack.decode(pipe.recv_bytes(), type=Snapshot)
        except (EOFError, OSError):
            loop.remove_reader(pipe.fileno())
            if not ended[k].done():
                ended[k].set_result(None)
            return
        latest[k] = snap
        hists[k] = LatencyHistogram.decode(snap.hist)
        lags[k] = LatencyHistogram.decode(snap.lag)
        if snap.ledgers is not None:
            finals[k] = snap
            loop.remove_reader(pipe.fileno())
            if not ended[k].done():
                ended[k].set_result(None)

    for k, pipe in enumerate(pipes):
        loop.add_reader(pipe.fileno(), on_message, k)

    def progress() -> tuple[Snapshot, LatencyHistogram]:
        hist = LatencyHistogram()
        for h in hists:
            hist.add(h)
        return merge(latest), hist

    def broadcast(command: bytes) -> None:
        for k, pipe in enumerate(pipes):
            if not ended[k].done():
                with contextlib.suppress(OSError):
                    pipe.send_bytes(command)

    if on_start is not None:
        on_start(progress)
    try:
        with LoopSignals(lambda: broadcast(b"stop"), lambda: broadcast(b"force")) as signals:
            await asyncio.gather(*ended.values())
    finally:
        for proc in children:
            await loop.run_in_executor(None, proc.join, settings.shutdown_timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in pipes:
            pipe.close()
    lost = processes - len(finals)
    if lost:
        log.error("worker processes ended without reporting; their ledgers are missing", extra={"lost": lost})
    totals, hist = progress()
    lag = LatencyHistogram()
    for h in lags:
        lag.add(h)
    ledgers = sorted(
        (entry for snap in finals.values() for entry in snap.ledgers or []),
        key=lambda e: int(str(e["client"])),
    )
    return _Outcome(
        totals=totals,
        hist=hist,
        lag=lag,
        ledgers=ledgers,
        interrupted=signals.count > 0,
        workers_lost=lost,
    )
