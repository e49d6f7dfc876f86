"""``footfall sink`` / ``python -m sink``: run the supervisor and its workers.

Start-up (each failure is one clear line and exit code 2 for configuration, 1 otherwise):
    1. parse and check settings (flags > env vars > defaults), create the record directory;
    2. wait for Kafka (``--broker-timeout``) and create ``<topic>.retry``/``<topic>.dlq`` if missing;
    3. serve ``/healthz /readyz /metrics`` on ``--metrics-host:--metrics-port``;
    4. run the supervisor until SIGTERM/SIGINT (see :mod:`sink.supervisor`); exit 3 if a
       worker stopped on an error restarting cannot fix (a human must look).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Final

from footfall.backoff import Backoff
from footfall.errors import BrokerUnavailableError
from footfall.kafka import ensure_topics, wait_for_broker
from footfall.logs import configure_logging
from footfall.preflight import check_listen
from footfall.settings import run_main
from sink.settings import SinkSettings, dlq_topic, parse_sink_settings, retry_topic

__all__ = ["main"]

log = logging.getLogger("sink")

#: Retries of the side topics' creation while a node is away (within --broker-timeout).
_TOPICS_BACKOFF: Final = Backoff(0.5, 5.0)


async def prepare_topics(settings: SinkSettings) -> None:
    """Wait for the cluster and create the side topics (retry, DLQ) that are missing.

    A node that dies meanwhile (the one the admin client asked: seen on Apache Kafka as
    ``NodeNotReadyError`` while a second sink started during a failover) is a reason to ask
    again, until ``--broker-timeout`` has passed since start-up.

    Raises:
        BrokerUnavailableError: Kafka did not answer within ``--broker-timeout``.
    """
    deadline = time.monotonic() + settings.broker_timeout
    await wait_for_broker(settings.brokers, settings.broker_timeout)
    topics = [t for ts in settings.group_topics().values() for t in ts]
    side = [name for t in topics for name in (retry_topic(t), dlq_topic(t))]
    for attempt in itertools.count(1):
        try:
            await ensure_topics(settings.brokers, side, settings.side_topic_partitions, settings.replication_factor)
            return
        except BrokerUnavailableError as exc:
            delay = _TOPICS_BACKOFF.delay(attempt)
            if time.monotonic() + delay >= deadline:
                raise
            log.warning("cannot create the side topics yet; retrying", extra={"error": str(exc), "delay_s": delay})
            await asyncio.sleep(delay)


class _StartupInterruptedError(Exception):
    """SIGTERM/SIGINT before the workers run: nothing to drain, exit 0."""


def _interrupt_startup(signum: int, frame: FrameType | None) -> None:
    raise _StartupInterruptedError(signal.Signals(signum).name)


def _run(argv: Sequence[str] | None) -> int:
    from sink.metrics_server import MetricsServer, workers_ready
    from sink.supervisor import Supervisor

    # Until the supervisor's own (enqueueing) handlers are installed, a signal aborts start-up.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt_startup)
    try:
        settings = parse_sink_settings(list(argv) if argv is not None else None)
        configure_logging(settings.log_level, "sink")
        # The machine's refusal first, naming who holds the port; it costs no broker wait.
        check_listen(settings.metrics_host, settings.metrics_port, "--metrics-port")
        asyncio.run(prepare_topics(settings))
        supervisor = Supervisor(settings)
        try:
            server = MetricsServer(
                settings.metrics_host,
                settings.metrics_port,
                metrics_dir=supervisor.metrics_dir,
                registry=supervisor.metrics.registry,
                readiness=lambda: workers_ready(
                    supervisor.metrics_dir, supervisor.alive_pids(), settings.concurrent_count, supervisor.fatal
                ),
            )
        except BaseException:
            supervisor.cleanup()
            raise
        supervisor.install_signal_handlers()
    except BrokerUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except _StartupInterruptedError as exc:
        log.info("signal during start-up; exiting", extra={"signal": str(exc)})
        return 0
    server.start()
    log.info(
        "sink started",
        extra={
            "groups": settings.groups,
            "workers": settings.concurrent_count,
            "record_directory": settings.record_directory,
            "metrics": f"http://{settings.metrics_host}:{server.port}/metrics",
        },
    )
    try:
        return supervisor.run()
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink; returns the process exit code (0 after a graceful shutdown)."""
    return run_main(lambda: _run(argv))


if __name__ == "__main__":
    raise SystemExit(main())
