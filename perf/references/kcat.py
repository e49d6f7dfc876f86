"""Kafka ceiling reference: produce and consume with librdkafka, as ``kcat -P`` / ``kcat -C`` would.

Debian's kcat links an old librdkafka that cannot talk to the embedded broker, so this
is kcat's job done with the librdkafka 2.16 inside the ``confluent-kafka`` wheel: the
produce and consume loops run in C (``produce()`` only enqueues, librdkafka batches,
sends and acknowledges on its own threads; ``consume(n)`` returns whole batches), so
Python adds well under a microsecond per record — a fair ceiling for what Kafka and
this machine can take, and what the gateway's and sink's rates are divided by.

Records look like the gateway's: key = userId, value = an encoded report, the four
``ff-*`` headers. Producer settings match the gateway's: ``acks=all``, no idempotence
(the embedded broker has no InitProducerId), no compression.

``python -m perf.references.kcat produce --brokers B --topic T --duration S`` and
``... consume --brokers B --topic T`` print one JSON object: records, seconds, records/s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from footfall.generator import DEFAULT_START_DATE, day_start_ms, original_visits, user_id
from footfall.kafka import HEADER_RECEIVED_MS, HEADER_REQUEST_ID, HEADER_SCHEMA, HEADER_TYPE
from footfall.reports import SCHEMA_VERSION, encode_report

__all__ = ["consume", "main", "produce"]


def _records(count: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    day = day_start_ms(DEFAULT_START_DATE, 0)
    out: list[tuple[bytes, bytes]] = []
    while len(out) < count:
        uid = user_id(rng)
        out.extend((str(uid).encode(), encode_report(v)) for v in original_visits(rng, uid, day))
    return out


def produce(brokers: str, topic: str, duration: float, max_records: int = 0) -> dict[str, Any]:
    """Produce for ``duration`` seconds (or ``max_records``), then flush; rate counts acknowledged records.

    Delivery: ``acks=all``; a record counts only once its delivery report says the broker has it.
    """
    import confluent_kafka

    pool = _records(12_000)
    acked = failed = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal acked, failed
        if err is None:
            acked += 1
        else:
            failed += 1

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": brokers,
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 5,
            "batch.size": 512 * 1024,
            "compression.type": "none",
            "queue.buffering.max.messages": 500_000,
            "log_level": 3,
        }
    )
    sent = offset = 0
    start = time.perf_counter()
    deadline = start + duration
    request_id = b"perf-reference"
    while time.perf_counter() < deadline and not (max_records and sent >= max_records):
        now_ms = str(int(time.time() * 1000)).encode()
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_TYPE, b"visit"),
            (HEADER_SCHEMA, str(SCHEMA_VERSION).encode()),
            (HEADER_RECEIVED_MS, now_ms),
            (HEADER_REQUEST_ID, request_id),
        ]
        for key, value in pool[offset : offset + 1200]:
            try:
                producer.produce(topic, value, key=key, headers=headers, on_delivery=on_delivery)
            except BufferError:
                producer.poll(0.005)
                producer.produce(topic, value, key=key, headers=headers, on_delivery=on_delivery)
            sent += 1
        offset = (offset + 1200) % len(pool)
        producer.poll(0)
    producer.flush(60)
    seconds = time.perf_counter() - start
    return {"records": acked, "failed": failed, "seconds": seconds, "records_per_s": acked / seconds}


def consume(brokers: str, topic: str, expect: int = 0, timeout: float = 120.0) -> dict[str, Any]:
    """Read ``topic`` from offset 0 until ``expect`` records (at least up to the high watermarks); time it."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"perf-reference-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52428800,
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        target = max(expect, sum(ends.values()))
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in partitions])
        got = 0
        start = time.perf_counter()
        deadline = start + timeout
        while got < target and time.perf_counter() < deadline:
            got += sum(1 for m in consumer.consume(10_000, 0.5) if m.error() is None)
        seconds = time.perf_counter() - start
    finally:
        consumer.close()
    return {"records": got, "expected": target, "seconds": seconds, "records_per_s": got / seconds if seconds else 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perf.references.kcat produce|consume ...``: one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m perf.references.kcat", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["produce", "consume"])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--duration", type=float, default=5.0, help="produce: seconds to produce for")
    parser.add_argument("--records", type=int, default=0, help="produce: stop after this many records (0 = no limit)")
    parser.add_argument("--expect", type=int, default=0, help="consume: records to read (default: the high watermarks)")
    args = parser.parse_args(argv)
    if args.mode == "produce":
        result = produce(args.brokers, args.topic, args.duration, args.records)
    else:
        result = consume(args.brokers, args.topic, args.expect)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
