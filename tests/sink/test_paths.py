"""Idle flush, the dead-letter topic and the retry topic (write failures), on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from footfall.kafka import HEADER_RECEIVED_MS, HEADER_TYPE, ensure_topics
from sink.checkpoint import CheckpointStore
from tests.sink.support import SinkProcess, checkpointed, compare, landed, make_records, produce, wait_for

pytestmark = pytest.mark.integration


def _topic(broker: str, partitions: int = 2) -> str:
    name = f"visit-{uuid.uuid4().hex[:10]}"
    asyncio.run(ensure_topics(broker, [name], partitions, 1))
    return name


async def _read_all(broker: str, topic: str, expected: int, timeout: float = 20) -> list[object]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out: list[object] = []
    try:
        await consumer.topics()  # loads metadata
        parts = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka 0.14, group-less consumer
            await consumer.stop()
    return out


def test_idle_flush_lands_records_within_the_flush_interval(broker: str, record_dir: Path) -> None:
    topic = _topic(broker)
    records = make_records(7, 3)  # 36 records, then traffic stops
    with SinkProcess(broker, [f"idle:{topic}"], record_dir, extra=["--flush-interval", "0.5"]) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, records))
        acked = time.monotonic()
        store = CheckpointStore(record_dir)

        def checkpointed() -> int:
            # The checkpoint is written after the fsync: it proves the records are durable.
            return sum((c.offset + 1) if (c := store.load(topic, p)) is not None else 0 for p in range(2))

        wait_for(lambda: checkpointed() >= len(records), 5, "the checkpoint to cover every record")
        elapsed = time.monotonic() - acked
        print(f"idle flush: checkpointed {elapsed:.2f}s after the last ack (flush interval 0.5s)")
        # flush interval + one poll round + generous scheduling slack: this 2-core machine is shared
        assert elapsed < 0.5 + 0.5 + 1.0, f"took {elapsed:.2f}s"
        assert compare([v for _, v in records], landed(record_dir, topic)) == (0, 0, 0)
        wait_for(lambda: sink.metric("footfall_sink_records_written_total", topic=topic) == len(records), 5, "metric")
        assert sink.metric("footfall_sink_e2e_latency_seconds_count", topic=topic) >= 1
        assert sink.terminate() == 0


def test_poison_records_go_to_the_dlq_and_never_block(broker: str, record_dir: Path) -> None:
    topic = _topic(broker, partitions=1)
    good = make_records(8, 2)
    bad_values = [b"not json", b'{"dataVer":1}', b'{"a":\n1}', b"", b"[1,2]"]
    mixed = good[:10] + [(b"k", v) for v in bad_values] + good[10:]
    asyncio.run(produce(broker, topic, mixed))
    # one more with an unknown type header
    asyncio.run(produce(broker, topic, [(b"k", good[0][1])], headers=lambda i: [(HEADER_TYPE, b"bogus")]))
    with SinkProcess(broker, [f"dlq:{topic}"], record_dir) as sink:
        sink.wait_ready()
        wait_for(lambda: sum(landed(record_dir, topic).values()) >= len(good), 30, "the good records to land")
        dlq = asyncio.run(_read_all(broker, f"{topic}.dlq", len(bad_values) + 1))
        wait_for(lambda: sink.metric("footfall_sink_dlq_records_total", topic=topic) == 6, 10, "the DLQ metric")
        assert sink.terminate() == 0
    assert compare([v for _, v in good], landed(record_dir, topic)) == (0, 0, 0)
    assert sorted(r.value for r in dlq) == sorted([*bad_values, good[0][1]])  # type: ignore[attr-defined]
    for record in dlq:
        headers = dict(record.headers)  # type: ignore[attr-defined]
        assert headers["ff-source-topic"] == topic.encode()
        assert headers["ff-source-partition"] == b"0"
        assert int(headers["ff-source-offset"]) in {10, 11, 12, 13, 14, len(mixed)}
        assert headers["ff-error"]
    by_value = {r.value: dict(r.headers) for r in dlq}  # type: ignore[attr-defined]
    assert b"newline" in by_value[b'{"a":\n1}']["ff-error"]
    assert b"bogus" in by_value[good[0][1]]["ff-error"]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: writes fail with ENOSPC once it is full (needs root / CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    ballast = directory / "ballast.bin"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    # fill the last partial pages too
    with contextlib.suppress(OSError):
        for i in range(1000):
            (directory / f"ballast-{i}").write_bytes(b"x" * 64)
    try:
        (directory / "probe").write_bytes(b"x" * 8192)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return ballast


@pytest.mark.parametrize(
    "poll",
    [
        [],
        # Polls of 3 leave fetched records in aiokafka's buffer when a write fails: the
        # seek back to the checkpoint must discard them (no gap, no duplicate).
        ["--max-poll-records", "3"],
    ],
    ids=["default-polls", "polls-of-3"],
)
def test_disk_full_parks_on_retry_topic_and_lands_later(broker: str, tiny_fs: Path, poll: list[str]) -> None:
    topic = _topic(broker, partitions=2)
    before = make_records(21, 5)
    during = make_records(22, 10)
    record_dir = tiny_fs / "records"
    with SinkProcess(broker, [f"full:{topic}"], record_dir, extra=["--write-retry-timeout", "1", *poll]) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, before))
        wait_for(lambda: sink.metric("footfall_sink_records_written_total", topic=topic) == len(before), 20, "first")
        _fill(tiny_fs)
        asyncio.run(produce(broker, topic, during))
        wait_for(lambda: sink.metric("footfall_sink_write_errors_total", topic=topic) > 0, 20, "write errors")
        wait_for(
            lambda: sink.metric("footfall_sink_retry_parked_records_total", topic=topic) >= len(during),
            30,
            "the batch to be parked on the retry topic",
        )
        parked = asyncio.run(_read_all(broker, f"{topic}.retry", len(during)))
        assert len(parked) >= len(during)
        # nothing of the second batch is in the files yet, nothing was dropped
        assert compare([v for _, v in before], landed(record_dir, topic)) == (0, 0, 0)
        for path in tiny_fs.glob("ballast*"):
            path.unlink()  # writing works again
        wait_for(lambda: sum(landed(record_dir, topic).values()) >= len(before) + len(during), 30, "the parked records")
        wait_for(lambda: sink.metric("footfall_sink_retry_landed_records_total", topic=topic) >= len(during), 10, "m")
        assert sink.terminate() == 0
    all_values = [v for _, v in before + during]
    assert compare(all_values, landed(record_dir, topic)) == (0, 0, 0)
    ckpt = json.loads((record_dir / "_footfall" / "checkpoints" / topic / "0.json").read_bytes())
    assert "parked" in ckpt


def test_received_header_is_optional(broker: str, record_dir: Path) -> None:
    """Records without ff-received-ms (other producers) land; they only lack a latency sample."""
    topic = _topic(broker, partitions=1)
    records = make_records(9, 1)
    asyncio.run(produce(broker, topic, records, headers=lambda i: [(HEADER_TYPE, b"visit")]))
    assert HEADER_RECEIVED_MS  # the header the gateway normally sets
    with SinkProcess(broker, [f"nohdr:{topic}"], record_dir) as sink:
        sink.wait_ready()
        wait_for(lambda: sum(landed(record_dir, topic).values()) >= len(records), 20, "records")
        assert sink.terminate() == 0
    assert compare([v for _, v in records], landed(record_dir, topic)) == (0, 0, 0)


def test_endpoints_and_metric_names(broker: str, record_dir: Path) -> None:
    topic = _topic(broker, partitions=2)
    records = make_records(11, 2)
    with SinkProcess(broker, [f"obs:{topic}"], record_dir, workers=2) as sink:
        assert sink.get("/healthz")[0] in {0, 200}
        sink.wait_ready()
        assert sink.get("/healthz") == (200, "ok\n")
        asyncio.run(produce(broker, topic, records))
        wait_for(lambda: sink.metric("footfall_sink_records_written_total", topic=topic) == len(records), 20, "metric")
        _status, text = sink.get("/metrics")
        for name in (
            "footfall_sink_records_written_total",
            "footfall_sink_bytes_written_total",
            "footfall_sink_e2e_latency_seconds_bucket",
            "footfall_sink_fsync_seconds_bucket",
            "footfall_sink_commit_seconds_bucket",
            "footfall_sink_assigned_partitions",
            "footfall_sink_workers_alive",
            "footfall_sink_worker_ready",
        ):
            assert name in text, name
        # 2 topic partitions + 1 retry partition, over 2 workers
        assert sink.metric("footfall_sink_assigned_partitions") == 3
        assert sink.metric("footfall_sink_workers_alive") == 2
        assert sink.get("/nope")[0] == 404
        assert sink.terminate() == 0


def test_metrics_port_in_use_is_a_clear_error(broker: str, record_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sink = SinkProcess(broker, ["g:visit-x"], record_dir, extra=["--metrics-port", str(port)])
        result = subprocess.run(sink.args, env=sink.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1  # the machine refused, not a bad flag (exit 2)
    assert f"error: --metrics-port: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_crash_while_parked_still_lands_once(broker: str, tiny_fs: Path) -> None:
    """Parked on the retry topic, then kill -9 before any checkpoint could be written: after
    the restart the source lands the records itself and the lander skips the parked copies."""
    topic = _topic(broker, partitions=2)
    before = make_records(31, 5)
    during = make_records(32, 10)
    record_dir = tiny_fs / "records"
    extra = ["--write-retry-timeout", "1"]
    with SinkProcess(broker, [f"crashpark:{topic}"], record_dir, extra=extra) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, before))
        wait_for(lambda: sink.metric("footfall_sink_records_written_total", topic=topic) == len(before), 20, "first")
        _fill(tiny_fs)
        asyncio.run(produce(broker, topic, during))
        wait_for(
            lambda: sink.metric("footfall_sink_retry_parked_records_total", topic=topic) >= len(during), 30, "parking"
        )
        sink.kill()  # the checkpoints still say "before" only: the disk is full
    for path in tiny_fs.glob("ballast*"):
        path.unlink()
    with SinkProcess(broker, [f"crashpark:{topic}"], record_dir, extra=extra) as sink:
        sink.wait_ready()
        # checkpointed, not merely in a file: the killed sink may have left uncommitted lines
        wait_for(lambda: checkpointed(record_dir, topic) >= len(before) + len(during), 30, "all records")
        wait_for(
            lambda: sink.metric("footfall_sink_retry_skipped_records_total", topic=topic) >= len(during),
            20,
            "the lander to skip the parked copies",
        )
        assert sink.terminate() == 0
    assert compare([v for _, v in before + during], landed(record_dir, topic)) == (0, 0, 0)
