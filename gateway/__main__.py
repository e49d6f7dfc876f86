"""``python -m gateway`` / ``footfall gateway``: run the ingestion gateway.

Start-up, in this order:

1. parse flags and env vars (a bad value: one line naming the flag, exit 2); check the
   port is free and ``--metrics-dir`` writable (else one line, exit 1);
2. wait for the broker (none within ``--startup-timeout``: one line, exit 1), create the
   topics if absent, resolve ``--idempotence auto`` (InitProducerId granted or not) — once,
   in the main process;
3. create the metrics directory every worker snapshots into; bind the listening socket here
   (``--port 0``: a free port, the one logged in ``gateway starting``);
4. serve with Sanic's worker manager (``--workers`` processes, uvloop). SIGTERM/SIGINT
   stop accepting, drain in-flight requests and batches within ``--shutdown-timeout``, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec

from footfall.errors import BrokerError, ConfigError, StartupError
from footfall.kafka import ensure_topics, probe_idempotence, wait_for_broker
from footfall.logs import configure_logging
from footfall.preflight import check_directory, check_listen, listen_socket
from footfall.settings import run_main
from gateway.producer import ProducerClass
from gateway.settings import GatewaySettings, parse_gateway_settings

__all__ = ["main"]

log = logging.getLogger("gateway")

_BACKLOG = 1024


async def _prepare(settings: GatewaySettings) -> bool:
    """Wait for the broker, create topics, and return whether to use the idempotent producer."""
    await wait_for_broker(settings.brokers, settings.startup_timeout)
    await ensure_topics(
        settings.brokers,
        [settings.visit_topic, settings.activity_topic],
        settings.partitions,
        settings.replication_factor,
    )
    if settings.idempotence == "off":
        return False
    supported = await probe_idempotence(settings.brokers)
    if settings.idempotence == "on" and not supported:
        raise ConfigError("--idempotence on: the broker does not grant a producer id (InitProducerId); use auto or off")
    if not supported:
        log.warning("broker does not support idempotent producers (InitProducerId); producing without idempotence")
    return supported


def _serve(
    settings: GatewaySettings, sock: socket.socket, idempotence: bool, producer_class: ProducerClass | None
) -> None:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from gateway.app import create_app
    from gateway.protocol import DeadlineHttpProtocol

    # Pickled into every spawned worker: only module-level callables (see ProducerClass).
    factory = None if producer_class is None else functools.partial(producer_class, idempotence=idempotence)
    loader = AppLoader(
        factory=functools.partial(
            create_app, settings, idempotence=idempotence, producer_factory=factory, configure_logs=True
        )
    )
    app = loader.load()
    app.prepare(
        sock=sock,
        workers=settings.worker_count,
        access_log=False,
        motd=False,
        single_process=False,
        backlog=_BACKLOG,
        protocol=DeadlineHttpProtocol,
    )
    Sanic.serve(primary=app, app_loader=loader)


def _run(argv: Sequence[str] | None, producer_class: ProducerClass | None) -> int:
    settings = parse_gateway_settings(argv)
    configure_logging(settings.log_level, "gateway")
    # The machine's refusals first: they are the operator's to fix and cost no broker wait.
    check_listen(settings.host, settings.port, "--port")
    if settings.metrics_dir:
        check_directory(Path(settings.metrics_dir), "--metrics-dir")
    try:
        idempotence = asyncio.run(_prepare(settings))
    except BrokerError as exc:  # unreachable (BrokerUnavailableError) or refused (e.g. the replication factor)
        raise StartupError(f"--brokers: {exc}") from exc
    sock = listen_socket(settings.host, settings.port, "--port", _BACKLOG)
    temporary: Path | None = None
    if settings.metrics_dir:
        metrics_dir = Path(settings.metrics_dir)
        for stale in metrics_dir.glob("*.json"):  # counters of an earlier run must not add up
            stale.unlink(missing_ok=True)
    else:
        temporary = Path(tempfile.mkdtemp(prefix="footfall-gateway-metrics-"))
        settings = msgspec.structs.replace(settings, metrics_dir=str(temporary))
    log.info(
        "gateway starting",
        extra={
            "host": settings.host,
            "port": sock.getsockname()[1],
            "workers": settings.worker_count,
            "idempotence": idempotence,
            "brokers": settings.brokers,
        },
    )
    try:
        _serve(settings, sock, idempotence, producer_class)
    finally:
        sock.close()
        if temporary is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(temporary)
    log.info("gateway stopped")
    return 0


def main(argv: Sequence[str] | None = None, *, producer_class: ProducerClass | None = None) -> int:
    """Run the gateway; returns the exit code (0 after a graceful shutdown, 2 for bad flags,
    1 when the machine or the broker refused: port in use, directory not writable, no Kafka).

    ``producer_class`` makes each worker's producer (default: :class:`gateway.batching.BatchingProducer`);
    perf passes its per-report reference (``python -m perf.references.per_report``).
    """
    return run_main(lambda: _run(argv, producer_class))


if __name__ == "__main__":
    raise SystemExit(main())
