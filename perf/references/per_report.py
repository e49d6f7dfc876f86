"""The gateway with a per-report producer: ``send()`` per report, then gather (a perf reference).

What the gateway's batching (:mod:`gateway.batching`) buys is measured against this, in the same
run: ``perf e2e``'s ``per_report`` phase and ``perf/gateway_wrk.py``'s ``per-report`` target. It is
the real gateway (same flags, HTTP code, in-flight cap, readiness, shutdown) with only the producer
swapped, through ``gateway.__main__.main(argv, producer_class=...)``; it is not a production mode.

Run: ``python -m perf.references.per_report --brokers 127.0.0.1:9092 --port 8082 --workers 2``
(the gateway's flags, ``--help`` lists them).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from footfall.errors import BrokerUnavailableError
from footfall.kafka import partition_for
from gateway.__main__ import main as gateway_main
from gateway.errors import UnavailableError
from gateway.producer import Delivery, Headers, KafkaProducerBase, Record

__all__ = ["PerReportProducer", "main"]


class PerReportProducer(KafkaProducerBase):
    """The plain approach: ``send()`` each report (aiokafka batches them itself), gather the acks."""

    async def submit(
        self, topic: str, records: Sequence[Record], headers: Headers, timestamp_ms: int
    ) -> list[Delivery]:
        """``send()`` each record and gather the acks into one future."""
        size = self._admit(records, headers)
        partitions = self._partitions(topic)
        self._inflight += size
        sends = []
        try:
            for key, value in records:
                sends.append(
                    await self._producer.send(
                        topic,
                        value,
                        key=key,
                        partition=partition_for(key, partitions),
                        timestamp_ms=timestamp_ms,
                        headers=headers,
                    )
                )
        except KafkaError as exc:
            for f in sends:
                f.cancel()
            self._inflight -= size
            raise UnavailableError(f"Kafka refused the records: {exc!r}") from exc
        loop = asyncio.get_running_loop()
        delivery: Delivery = loop.create_future()
        self._track(delivery)
        timer = loop.call_later(self._produce_timeout, self._expire, delivery)
        gathered = asyncio.gather(*sends, return_exceptions=True)
        gathered.add_done_callback(functools.partial(self._on_gathered, delivery, size, timer, self._producer))
        return [delivery]

    def _on_gathered(
        self,
        delivery: Delivery,
        size: int,
        timer: asyncio.TimerHandle,
        producer: Any,
        gathered: asyncio.Future[list[Any]],
    ) -> None:
        timer.cancel()
        error: BaseException | None = None
        if gathered.cancelled():
            error = BrokerUnavailableError("produce cancelled")
        else:
            error = next((r for r in gathered.result() if isinstance(r, BaseException)), None)
        if error is None:
            self._last_ack = time.monotonic()
        else:
            self._batch_failed(error, producer)
        self._release(size)
        if not delivery.done():
            delivery.set_result(error)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway`` with :class:`PerReportProducer` in every worker; the same exit codes."""
    return gateway_main(argv, producer_class=PerReportProducer)


if __name__ == "__main__":
    raise SystemExit(main())
