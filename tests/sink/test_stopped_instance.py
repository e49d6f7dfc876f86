"""One SIGSTOPped sink instance does not stall the group: the other instance's partitions keep
landing while it waits for the stopped one's partition locks; the wait shows in /readyz and
the metrics; once the stopped one resumes, everything lands exactly once.

Real embedded broker, two real ``python -m sink`` instances on one record directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from tests.sink.support import SinkProcess, checkpointed, compare, landed, make_records, produce, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

SESSION = ["--session-timeout", "4"]


class _SteadyProducer(threading.Thread):
    """Produces the records a chunk every 0.25 s until they run out or :meth:`finish` is called."""

    def __init__(self, brokers: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        super().__init__(daemon=True)
        self.brokers, self.topic, self.records = brokers, topic, records
        self.sent: list[bytes] = []
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        try:
            for i in range(0, len(self.records), 24):
                if self._done.is_set():
                    return
                chunk = self.records[i : i + 24]
                asyncio.run(produce(self.brokers, self.topic, chunk))
                self.sent += [v for _, v in chunk]
                time.sleep(0.25)  # pacing the load, not waiting for a condition
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self._done.set()
        self.join(60)
        assert self.error is None, self.error


def _locked_by(pids: list[int], lock_dir: Path) -> list[int]:
    """Partitions whose lock file ``pids`` hold an flock on (from /proc/locks)."""
    inodes = {
        int(fields[5].rsplit(":", 1)[1])
        for fields in (line.split() for line in Path("/proc/locks").read_text().splitlines())
        if fields[1] == "FLOCK" and int(fields[4]) in pids
    }
    return sorted(int(p.stem) for p in lock_dir.glob("*.lock") if p.stat().st_ino in inodes)


def _offsets(record_dir: Path, topic: str, partitions: list[int]) -> int:
    total = 0
    for p in partitions:
        with contextlib.suppress(OSError, ValueError, KeyError):
            total += json.loads((record_dir / "_footfall" / "checkpoints" / topic / f"{p}.json").read_bytes())["offset"]
    return total


def test_a_stopped_instance_does_not_stall_the_other(broker: str, record_dir: Path, tmp_path: Path) -> None:
    topic = f"visit-{uuid.uuid4().hex[:10]}"
    asyncio.run(ensure_topics(broker, [topic], 4, 1))
    records = make_records(5, 400)
    random.Random(5).shuffle(records)  # every chunk reaches every partition
    group = [f"stop-{topic}:{topic}"]
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = SinkProcess(broker, group, record_dir, extra=SESSION, log_path=log_a).start()
    b = SinkProcess(broker, group, record_dir, extra=[*SESSION, "--lock-timeout", "2"], log_path=log_b).start()
    producer = _SteadyProducer(broker, topic, records)
    try:
        a.wait_ready()
        b.wait_ready()
        wait_for(
            lambda: (
                a.metric("footfall_sink_assigned_partitions") > 0
                and a.metric("footfall_sink_assigned_partitions") + b.metric("footfall_sink_assigned_partitions") == 5
            ),
            40,
            "both instances to hold partitions",
        )
        lock_dir = record_dir / "_footfall" / "locks" / topic
        b_partitions = _locked_by(b.worker_pids(), lock_dir)
        assert b_partitions, "instance B holds none of the topic's partitions (only the retry partition)"
        producer.start()
        wait_for(lambda: checkpointed(record_dir, topic) > 0, 20, "records to land")

        os.killpg(a.pid, signal.SIGSTOP)  # supervisor and workers: the whole instance
        stopped = time.monotonic()
        try:
            # For 20 s while A is stopped, B's own partitions keep landing: no pause longer than
            # the rebalance that evicts A (its 4 s session timeout plus the rejoin).
            last, last_change, longest, blocked_seen = _offsets(record_dir, topic, b_partitions), stopped, 0.0, ""
            while time.monotonic() - stopped < 20:
                now_offsets = _offsets(record_dir, topic, b_partitions)
                now = time.monotonic()
                if now_offsets != last:
                    last, last_change = now_offsets, now
                longest = max(longest, now - last_change)
                status, body = b.get("/readyz")
                if status == 503 and "waiting for the partition lock" in body:
                    blocked_seen = body
                time.sleep(0.2)  # sampling interval of the measurement
            assert longest < 10, f"B's partitions {b_partitions} landed nothing for {longest:.1f}s while A was stopped"
            assert blocked_seen, "B's /readyz never said a partition waits for its lock"
            assert b.metric("footfall_sink_lock_waiting_partitions") > 0
            assert b.metric("footfall_sink_lock_waits_total") > 0
        finally:
            os.killpg(a.pid, signal.SIGCONT)
        producer.finish()
        # A resumes, finds itself out of the group, lets go of its locks; B (or A) lands the rest.
        wait_for(lambda: checkpointed(record_dir, topic) >= len(producer.sent), 60, "every record to land")
        wait_for(lambda: a.ready() and b.ready(), 30, "both instances to be ready again")
        assert b.metric("footfall_sink_lock_wait_seconds_count") + a.metric("footfall_sink_lock_wait_seconds_count") > 0
        assert b.metric("footfall_sink_lock_waiting_partitions") == 0
        assert b.poll() is None and a.poll() is None
        assert a.terminate() == 0
        assert b.terminate() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(a.pid, signal.SIGCONT)
        a.kill()
        b.kill()
    assert compare(producer.sent, landed(record_dir, topic)) == (0, 0, 0), f"logs {log_a} {log_b}"
