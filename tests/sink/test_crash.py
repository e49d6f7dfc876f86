"""Exactly once across kill -9 of workers and of the whole sink, and across rebalances.

Real embedded broker, real ``python -m sink`` processes. The kill schedule is random but
seeded; the seed is printed (``FOOTFALL_TEST_SEED=N`` replays one).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from tests.sink.support import SinkProcess, checkpointed, compare, landed, make_records, produce, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = ["--session-timeout", "3"]
#: Small buffer and a long flush interval: kills leave bytes past the checkpoint to truncate.
TORN = [*FAST, "--buffer-bytes", "4096", "--flush-interval", "1"]


def _seed() -> int:
    seed = int(os.environ.get("FOOTFALL_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed={seed} (replay with FOOTFALL_TEST_SEED={seed})")
    return seed


class _Producer(threading.Thread):
    """Produces ``records`` in chunks with pauses, in the background, while the test kills things."""

    def __init__(self, brokers: str, topic: str, records: list[tuple[bytes, bytes]], chunks: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.brokers, self.topic, self.records = brokers, topic, records
        self.chunks, self.pause = chunks, pause
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            size = -(-len(self.records) // self.chunks)
            for i in range(0, len(self.records), size):
                asyncio.run(produce(self.brokers, self.topic, self.records[i : i + size]))
                time.sleep(self.pause)  # pacing the load, not waiting for a condition
        except BaseException as exc:
            self.error = exc


def _dead(pid: int) -> bool:
    """Gone or a zombie: SIGKILL has taken effect (os.kill returns before it has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in {"Z", "X"}


def _settle(sink: SinkProcess, record_dir: Path, topic: str, values: list[bytes], timeout: float = 60) -> None:
    # Checkpointed, not merely present in a file: a killed worker leaves uncommitted
    # lines that the next owner of the partition deletes.
    sink.wait_ready()
    wait_for(lambda: checkpointed(record_dir, topic) >= len(values), timeout, "every record to be checkpointed")


def test_crash_loop_kill_workers_and_sink(broker: str, record_dir: Path, tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    topic = asyncio.run(_topic(broker, 4))
    records = make_records(seed, 600)  # 7200 reports
    values = [v for _, v in records]
    assert len(set(values)) == len(values)
    log = tmp_path / "sink.log"
    producer = _Producer(broker, topic, records, chunks=16, pause=0.2)
    sink = SinkProcess(broker, [f"crash:{topic}"], record_dir, workers=2, extra=TORN, log_path=log).start()
    try:
        sink.wait_ready()
        producer.start()
        for round_ in range(8):
            if rng.random() < 0.75:
                sink.wait_ready()  # mostly kill while consuming; sometimes during start-up
            time.sleep(rng.uniform(0.05, 1.0))  # a random kill moment
            if rng.random() < 0.5 and sink.worker_pids():
                victim = rng.choice(sink.worker_pids())
                print(f"round {round_}: kill -9 worker {victim}")
                os.kill(victim, signal.SIGKILL)
                # Until it is really dead, /readyz may still count it: the graceful stop at
                # the end would then meet a worker that died under it.
                wait_for(lambda victim=victim: _dead(victim), 10, f"worker {victim} to die")
            else:
                print(f"round {round_}: kill -9 the whole sink")
                sink.kill()
                sink = SinkProcess(broker, [f"crash:{topic}"], record_dir, workers=2, extra=TORN, log_path=log)
                sink.start()
        producer.join(120)
        assert producer.error is None, producer.error
        if sink.poll() is not None:
            sink = SinkProcess(broker, [f"crash:{topic}"], record_dir, workers=2, extra=TORN, log_path=log).start()
        _settle(sink, record_dir, topic, values)
        assert sink.terminate() == 0
    finally:
        sink.kill()
    text = log.read_text()
    print(f"recoveries cut {text.count('truncated uncommitted')} tails, {text.count('deleted uncommitted')} segments")
    lost, duplicated, unexpected = compare(values, landed(record_dir, topic))
    assert (lost, duplicated, unexpected) == (0, 0, 0), f"seed={seed} log={log}"


def test_rebalance_second_instance_joins_and_leaves(broker: str, record_dir: Path, tmp_path: Path) -> None:
    seed = _seed()
    topic = asyncio.run(_topic(broker, 4))
    records = make_records(seed, 300)
    values = [v for _, v in records]
    log = tmp_path / "sink.log"
    producer = _Producer(broker, topic, records, chunks=10, pause=0.3)
    first = SinkProcess(broker, [f"reb:{topic}"], record_dir, workers=1, extra=FAST, log_path=log).start()
    second: SinkProcess | None = None
    try:
        first.wait_ready()
        producer.start()
        second = SinkProcess(broker, [f"reb:{topic}"], record_dir, workers=1, extra=FAST, log_path=log).start()
        second.wait_ready()
        wait_for(
            lambda: second.metric("footfall_sink_assigned_partitions") > 0, 30, "the second instance to get partitions"
        )
        assert second.terminate() == 0  # leaves gracefully mid-stream
        third = SinkProcess(broker, [f"reb:{topic}"], record_dir, workers=1, extra=FAST, log_path=log).start()
        second = third
        third.wait_ready()
        wait_for(
            lambda: third.metric("footfall_sink_assigned_partitions") > 0, 30, "the third instance to get partitions"
        )
        third.kill()  # leaves by kill -9 mid-stream
        producer.join(120)
        assert producer.error is None, producer.error
        _settle(first, record_dir, topic, values)
        assert first.terminate() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert compare(values, landed(record_dir, topic)) == (0, 0, 0), f"seed={seed} log={log}"


async def _topic(broker: str, partitions: int) -> str:
    import uuid

    name = f"visit-{uuid.uuid4().hex[:10]}"
    await ensure_topics(broker, [name], partitions, 1)
    return name
