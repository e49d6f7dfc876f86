"""A sink worker process: every configured consumer group, the side producer, metrics snapshots.

Spawned by the supervisor (:mod:`sink.supervisor`) through :func:`run_worker`. SIGTERM
drains (flush, fsync, checkpoint, commit: :mod:`sink.commit`) and exits 0; SIGINT is
ignored (the supervisor decides). A worker that stops on a :class:`~sink.errors.SinkError`
exits with the class's ``exit_code``: 3 for a :class:`~sink.errors.RecoveryError` (a human
must look; the supervisor does not restart it), 4 for a stall, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path

from footfall.logs import configure_logging
from footfall.metrics import SnapshotWriter
from sink.consumer import client_id
from sink.errors import SinkError
from sink.instruments import SinkMetrics
from sink.parent import ParentWatch
from sink.settings import SinkSettings
from sink.side_topics import SideProducer
from sink.worker import GroupWorker

__all__ = ["Worker", "run_worker"]

log = logging.getLogger(__name__)


class Worker:
    """All group workers of one process, plus the side producer and metrics snapshots."""

    def __init__(self, settings: SinkSettings, metrics_dir: Path | None = None, index: int = 0) -> None:
        self.settings = settings
        self.index = index
        self.metrics = SinkMetrics()
        self.metrics_dir = metrics_dir
        self.stop_event = asyncio.Event()
        self.side = SideProducer(settings.brokers, client_id=client_id())
        self.groups = [
            GroupWorker(settings, group, topics, side=self.side, metrics=self.metrics, stop=self.stop_event)
            for group, topics in settings.group_topics().items()
        ]

    def stop(self) -> None:
        """Ask for a graceful stop (safe from a signal handler)."""
        self.stop_event.set()
        self.side.stopping = True  # unacknowledged side-topic sends give up instead of retrying

    async def run(self) -> None:
        """Run until :meth:`stop`; drain (flush, fsync, commit) before returning."""
        snapshots = SnapshotWriter(self.metrics.registry, self.metrics_dir) if self.metrics_dir else None
        if snapshots is not None:
            snapshots.start()
        await self.side.start()
        try:
            tasks = [asyncio.create_task(g.run(), name=f"group-{g.group}") for g in self.groups]

            async def _ready() -> None:
                for g in self.groups:
                    await g.ready.wait()
                self.metrics.ready.set(1)
                if snapshots is not None:
                    snapshots.write()

            ready = asyncio.create_task(_ready())
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            ready.cancel()
            self.stop_event.set()  # one group failed: stop the others cleanly too
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.metrics.ready.set(0)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        finally:
            await self.side.stop()
            if snapshots is not None:
                await snapshots.stop()


def run_worker(settings: SinkSettings, index: int, metrics_dir: str | None) -> None:
    """Entry point of a worker process (spawned by the supervisor).

    SIGTERM drains and exits 0; SIGINT is ignored (the supervisor decides, and a
    terminal's Ctrl+C reaches the whole process group). Exit code 1 on a fatal error.
    """
    configure_logging(settings.log_level, "sink")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Every fetched record is a fresh Python object, none of them in a cycle: collect the
    # young generation less often, and keep start-up objects out of every collection.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)

    # Die with the supervisor: a kill -9 of it must not leave workers consuming (step 1 of
    # sink.parent); returns False if it is gone already.
    parent = ParentWatch(settings.shutdown_timeout)
    if not parent.start():
        log.error("supervisor gone before the worker started; exiting", extra={"worker": index})
        raise SystemExit(1)

    async def main() -> None:
        # aiokafka clients must be created inside the running loop.
        worker = Worker(settings, Path(metrics_dir) if metrics_dir else None, index)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, parent.on_sigterm, worker.stop)
        parent.watch(loop, worker.stop)
        await worker.run()

    try:
        import uvloop

        uvloop.run(main())
    except SinkError as exc:
        # The exit code tells the supervisor whether a restart can help (sink.errors).
        log.error("worker failed", extra={"worker": index, "error": str(exc), "exitcode": exc.exit_code})
        raise SystemExit(exc.exit_code) from exc
    log.info("worker stopped", extra={"worker": index})
