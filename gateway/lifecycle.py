"""A worker's life, as Sanic listeners: start the producer, refuse new connections when the whole
gateway stops, drain and stop; in the main process, the watchdog.

1. ``before_server_start`` (:func:`before_start`): logging, the metric snapshots, the producer (a
   broker that is not there yet: serve 503 and retry every second, never crash the worker);
2. ``before_server_stop`` (:func:`before_stop`): the last worker told to stop shuts the listener;
3. ``after_server_stop`` (:func:`after_stop`): flush and stop the producer, the last snapshot;
4. ``main_process_ready`` (:func:`start_watchdog`): see :mod:`gateway.watchdog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from typing import Any

from sanic import Sanic
from sanic.worker.constants import ProcessState

from footfall.errors import BrokerError
from footfall.logs import configure_logging
from footfall.metrics import SnapshotWriter
from gateway.context import GatewayApp, GatewayContext

__all__ = ["after_stop", "before_start", "before_stop", "start_watchdog"]

log = logging.getLogger(__name__)


async def before_start(app: GatewayApp) -> None:
    ctx = app.ctx
    settings = ctx.settings
    if ctx.configure_logs:
        configure_logging(settings.log_level, "gateway")
    if ctx.metrics_dir is not None:
        ctx.snapshots = SnapshotWriter(ctx.metrics.registry, ctx.metrics_dir)
        ctx.snapshots.start()
    try:
        await _start_producer(ctx)
    except BrokerError as exc:  # unreachable or refused: either way retried
        # Never crash a worker over the broker: serve 503 (not ready) and keep trying.
        log.error("producer not started; retrying every second", extra={"error": str(exc)})
        ctx.starter = asyncio.get_running_loop().create_task(_keep_starting(ctx))
    # Start-up objects (Sanic, aiokafka, routes) are long-lived: freeze them out of the cyclic GC,
    # which the ~100 short-lived objects of every request trigger (decode: 6.5 -> 5.1 us measured).
    gc.collect()
    gc.freeze()
    log.info("worker ready", extra={"pid": os.getpid(), "producer": ctx.producer is not None})


async def _start_producer(ctx: GatewayContext) -> None:
    producer = ctx.producer_factory(ctx.settings, ctx.metrics)
    await producer.start()
    ctx.producer = producer
    ctx.started_at = time.monotonic()


async def _keep_starting(ctx: GatewayContext) -> None:
    while ctx.producer is None:
        await asyncio.sleep(1.0)
        try:
            await _start_producer(ctx)
        except BrokerError:
            continue
        log.info("producer started after retrying")


async def before_stop(app: GatewayApp) -> None:
    """When the whole gateway stops, refuse new connections before draining the open ones.

    Every worker shares one listening socket, held open by the main process until it exits: a
    connection queued there after the workers stopped accepting would wait for nothing and then
    be reset. So the last worker told to stop shuts it down (new connections are refused), after
    one turn of the loop that accepts those already queued. Not when only this worker stops (a
    restart): the others still serve on it. Open connections drain in gateway.protocol.
    """
    await asyncio.sleep(0)
    if not _whole_gateway_stopping(app):
        return
    for info in app.state.server_info:
        sock = info.settings.get("sock")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
    log.info("listener closed; draining open connections", extra={"pid": os.getpid()})


def _whole_gateway_stopping(app: GatewayApp) -> bool:
    """True when Sanic's manager marked every HTTP worker TERMINATED (it does so before signalling each)."""
    try:
        states = app.m.workers.values()
    except (AttributeError, LookupError, OSError, EOFError):  # not under Sanic's manager, or its state is gone
        return False
    servers = [state for state in states if state.get("server")]
    return bool(servers) and all(state.get("state") == ProcessState.TERMINATED.name for state in servers)


async def after_stop(app: GatewayApp) -> None:
    ctx = app.ctx
    if ctx.starter is not None:
        ctx.starter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ctx.starter
    producer, ctx.producer = ctx.producer, None
    if producer is not None:
        await producer.stop(ctx.settings.shutdown_timeout)
    if ctx.snapshots is not None:
        await ctx.snapshots.stop()
    log.info("worker stopped", extra={"pid": os.getpid()})


def start_watchdog(app: Sanic[Any, Any]) -> None:
    """In the main process: restart workers that die (Sanic itself does not); exit if the shared state dies;
    stop signals only queue the stop (see gateway.watchdog)."""
    from gateway.watchdog import WorkerWatchdog, exit_when_shared_state_lost, queue_stop_signals

    exit_when_shared_state_lost(app.manager, app.ctx.settings.shutdown_timeout)
    queue_stop_signals(app.manager)
    WorkerWatchdog(app.manager).start()
