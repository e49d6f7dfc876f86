"""Is a group worker still landing? Consumer lag per partition, and the stall check.

aiokafka fetches in a background task. When that task dies (an unexpected error, e.g.
a write on a transport a connection reset closed), aiokafka logs it once and carries on
heartbeating: the worker keeps its partitions, lands nothing, and would look healthy
forever. :class:`Liveness` runs beside the consumer loop and, every few seconds:

    1. asks the consumer whether its fetch task ended: if so, the worker stops with
       :class:`~sink.errors.WorkerStalledError` (the supervisor starts a fresh process);
    2. asks the broker for each held partition's end offset (ListOffsets, a request of
       its own) and exports the lag ``end - next offset to land`` as
       ``footfall_sink_lag_records{topic,partition}``;
    3. stops the worker the same way if a partition has had lag for ``--stall-timeout``
       seconds with no record fetched for it, unless the worker itself paused it (a
       write-failure backoff, an offset-gap refetch, a parked record waiting for its
       source): records exist, the fetcher should have brought some.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from sink.consumer import SinkConsumer, TopicPartition, tp_name
from sink.errors import WorkerStalledError
from sink.instruments import SinkMetrics

__all__ = ["Liveness"]

log = logging.getLogger(__name__)

#: Seconds between two checks at most (shorter for a short --stall-timeout).
_INTERVAL_MAX: Final = 5.0


class Liveness:
    """Lag and stall watch of one group worker's partitions (see the module docstring).

    The worker tells it what happens: :meth:`held` when a partition is recovered,
    :meth:`fetched` when records of it arrive, :meth:`dropped` when it goes.
    """

    def __init__(
        self,
        consumer: SinkConsumer,
        metrics: SinkMetrics,
        *,
        stall_timeout: float,
        positions: Callable[[], dict[TopicPartition, int]],
        paused: Callable[[TopicPartition], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.stall_timeout = stall_timeout
        self.interval = min(_INTERVAL_MAX, max(0.2, stall_timeout / 4))
        self._positions = positions
        self._paused = paused
        self.clock = clock
        #: tp -> when a record of it last arrived (or it was last paused, or gained lag).
        self._active: dict[TopicPartition, float] = {}
        self.lag: dict[TopicPartition, int] = {}

    def held(self, tp: TopicPartition) -> None:
        self._active[tp] = self.clock()

    def fetched(self, tp: TopicPartition) -> None:
        self._active[tp] = self.clock()

    def dropped(self, tp: TopicPartition) -> None:
        self._active.pop(tp, None)
        if self.lag.pop(tp, None) is not None:
            # Gauges add up over live workers: the new owner reports this partition now.
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(0)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every :attr:`interval` until ``stop`` is set.

        Raises:
            WorkerStalledError: the fetch task died, or a partition stalled.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set():
                return
            await self.check()

    async def check(self) -> None:
        """One round of steps 1-3."""
        error = self.consumer.fetcher_error()
        if error is not None:
            raise WorkerStalledError(f"the consumer's fetch task died ({error!r}); restarting the worker")
        positions = self._positions()
        try:
            ends = await self.consumer.end_offsets(list(positions))
        except (KafkaError, TimeoutError) as exc:
            # No answer is not a stall of ours: the broker is away (the gateway's /readyz says so).
            log.warning("cannot read end offsets for lag", extra={"error": repr(exc)})
            return
        now = self.clock()
        positions = self._positions()  # the end offsets took a round trip: compare with fresh positions
        for tp, end in ends.items():
            position = positions.get(tp)
            if position is None:
                continue  # dropped meanwhile
            lag = max(0, end - position)
            had_lag = self.lag.get(tp, 0) > 0
            self.lag[tp] = lag
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
            if lag == 0 or self._paused(tp) or not had_lag:
                # Without lag or paused on purpose nothing is owed; new lag starts the clock.
                self._active[tp] = now
                continue
            idle = now - self._active.get(tp, now)
            if idle >= self.stall_timeout:
                raise WorkerStalledError(
                    f"{tp_name(tp)}: no record fetched for {idle:.0f}s while {lag} records wait "
                    f"(--stall-timeout {self.stall_timeout:g}); restarting the worker"
                )
