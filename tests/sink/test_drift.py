"""State drift: the checkpoints no longer describe the partition's log.

- The log started over under an old record directory (the memory-only embedded broker
  restarted, as with ``footfall up`` run twice; on real Kafka a topic deleted and created
  again): real brokers, a real ``python -m sink``. The earlier files stay byte for byte, the
  new log lands once, in files of generation 1.
- Records removed by retention before they landed: the embedded broker has no retention and
  no DeleteRecords, so this one is a unit test of the worker's assignment path with a
  stand-in consumer that reports the log's bounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from footfall.layout import parse_segment_name
from sink.checkpoint import Checkpoint, CheckpointStore
from sink.consumer import TopicPartition
from sink.instruments import SinkMetrics
from sink.settings import SinkSettings
from sink.side_topics import SideProducer
from sink.worker import GroupWorker
from stack.broker import EmbeddedBroker
from tests.sink.support import SinkProcess, compare, landed, make_records, produce, wait_for


def _files(record_dir: Path, topic: str) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((record_dir / topic).glob("date=*/*.jsonl"))
    }


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("new_users", "before_start"),
    [(30, 100), (90, 1080)],
    ids=["shorter-new-log", "new-log-already-longer"],
)
def test_log_started_over_lands_in_a_new_generation(
    record_dir: Path, tmp_path: Path, new_users: int, before_start: int
) -> None:
    """Shorter: the checkpoints are past the new log's end. Longer: the new log has passed them before
    the sink looks (what topic ids would show): the record at a checkpointed offset is another one."""
    topic, partitions = "visit", 3
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    old = make_records(seed, 60)  # 720 reports
    new = make_records(seed + 1, new_users)  # 12 reports each
    log = tmp_path / "sink.log"
    groups = [f"drift:{topic}"]

    with EmbeddedBroker() as first:
        asyncio.run(ensure_topics(first.bootstrap, [topic], partitions, 1))
        with SinkProcess(first.bootstrap, groups, record_dir, log_path=log) as sink:
            sink.wait_ready()
            asyncio.run(produce(first.bootstrap, topic, old))
            wait_for(lambda: sum(landed(record_dir, topic).values()) == len(old), 40, "the first log to land")
            assert sink.terminate() == 0
    earlier = _files(record_dir, topic)
    assert earlier and all(parse_segment_name(n).generation == 0 for n in earlier)  # type: ignore[union-attr]

    # A fresh memory broker: the same topic, its offsets from 0 again.
    with EmbeddedBroker() as second:
        asyncio.run(ensure_topics(second.bootstrap, [topic], partitions, 1))
        head, tail = new[:before_start], new[before_start:]
        asyncio.run(produce(second.bootstrap, topic, head))  # some of the new log before the sink starts
        with SinkProcess(second.bootstrap, groups, record_dir, log_path=log) as sink:
            sink.wait_ready()
            if tail:
                asyncio.run(produce(second.bootstrap, topic, tail))
            values = [v for _, v in old + new]
            wait_for(
                lambda: compare(values, landed(record_dir, topic)) == (0, 0, 0), 40, "both logs landed exactly once"
            )
            # Worker snapshots reach /metrics up to a second late.
            wait_for(
                lambda: sink.metric("footfall_sink_log_restarts_total") == partitions, 10, "log restarts to be counted"
            )
            assert sink.terminate() == 0

    now = _files(record_dir, topic)
    assert {n: now[n] for n in earlier} == earlier  # the earlier log's files: not overwritten, not appended to
    later = [parse_segment_name(n) for n in now if n not in earlier]
    assert later and all(s is not None and s.generation == 1 for s in later)
    for p in range(partitions):
        ckpt = CheckpointStore(record_dir).load(topic, p)
        assert ckpt is not None and ckpt.generation == 1
    errors = [json.loads(line) for line in log.read_text().splitlines() if "the partition's log started over" in line]
    assert len(errors) == partitions and all(e["level"] == "error" for e in errors)
    for e in errors:  # the line names the sign it saw
        ahead = e["checkpoint_offset"] >= e["log_end"]
        sign = "checkpoint ahead of the log" if ahead else "the log holds other records than the files"
        assert e["message"].startswith(sign), e
    if before_start == len(new):
        # At least one partition's new log had passed its checkpoint: only the landed record's CRC told.
        assert any(e["log_end"] > e["checkpoint_offset"] + 1 for e in errors), errors


class _BoundsConsumer:
    """Stands in for SinkConsumer on the assignment path: fixed log bounds, records seeks."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.start)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, tp: TopicPartition) -> None: ...

    def resume(self, tp: TopicPartition) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        return True


async def _assign(record_dir: Path, consumer: _BoundsConsumer, metrics: SinkMetrics) -> GroupWorker:
    settings = SinkSettings(groups=["g:visit"], record_directory=str(record_dir))
    worker = GroupWorker(
        settings, "g", ["visit"], side=SideProducer(settings.brokers), metrics=metrics, stop=asyncio.Event()
    )
    worker.consumer = consumer  # type: ignore[assignment]
    await worker.on_assigned([TopicPartition("visit", 0)])
    assert worker._fatal is None, worker._fatal
    return worker


async def test_retention_loss_is_counted_and_logged_once(record_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    CheckpointStore(record_dir).save("visit", 0, Checkpoint(offset=99))
    metrics = SinkMetrics()
    consumer = _BoundsConsumer(start=500, end=800)  # offsets 100..499 were removed before they landed
    with caplog.at_level(logging.ERROR, logger="sink.drift"):
        worker = await _assign(record_dir, consumer, metrics)
    tp = TopicPartition("visit", 0)
    assert consumer.seeks == [(tp, 500)]  # consumed from the log's start, no gap to wait for
    assert metrics.retention_lost.labels("visit").value == 400
    lost = [r for r in caplog.records if "retention" in r.getMessage()]
    assert len(lost) == 1 and (lost[0].first_lost, lost[0].last_lost) == (100, 499)  # type: ignore[attr-defined]
    loaded = CheckpointStore(record_dir).load("visit", 0)
    assert loaded is not None and loaded.offset == 499 and loaded.generation == 0  # settled at once
    for t in list(worker.writers):
        worker._drop(t)

    # Assigned again (a restart): the loss was recorded already, it is not counted twice.
    again = SinkMetrics()
    worker = await _assign(record_dir, _BoundsConsumer(start=500, end=800), again)
    assert again.retention_lost.labels("visit").value == 0
    assert again.log_restarts.labels("visit").value == 0
    for t in list(worker.writers):
        worker._drop(t)
