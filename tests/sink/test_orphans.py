"""Workers die with their supervisor: after ``kill -9`` of it no orphan keeps consuming, a
new instance gets every partition, and SIGTERM to that one leaves nothing running.

Real embedded broker, real ``python -m sink`` processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from tests.sink.support import SinkProcess, checkpointed, compare, landed, make_records, produce, wait_for
from tests.sink.test_crash import _dead

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]


def test_kill_9_of_the_supervisor_leaves_no_orphans(broker: str, record_dir: Path, tmp_path: Path) -> None:
    topic = f"visit-{uuid.uuid4().hex[:10]}"
    asyncio.run(ensure_topics(broker, [topic], 4, 1))
    records = make_records(11, 60)
    first_half, second_half = records[:360], records[360:]
    group = [f"orphans-{topic}:{topic}"]
    log = tmp_path / "sink.log"
    first = SinkProcess(broker, group, record_dir, workers=2, log_path=log).start()
    second: SinkProcess | None = None
    try:
        first.wait_ready()
        asyncio.run(produce(broker, topic, first_half))
        wait_for(lambda: checkpointed(record_dir, topic) >= len(first_half), 30, "the first half to land")
        orphans = first.worker_pids()
        assert len(orphans) == 2
        os.kill(first.pid, signal.SIGKILL)  # the supervisor alone; its workers are not signalled
        first.proc.wait(10)  # type: ignore[union-attr]
        # They drain (flush, fsync, checkpoint, commit) and exit within --shutdown-timeout.
        wait_for(lambda: all(_dead(pid) for pid in orphans), 20, f"the orphaned workers {orphans} to exit")

        second = SinkProcess(broker, group, record_dir, workers=2, log_path=log).start()
        second.wait_ready()
        # Every partition of the topic and its .retry topic (1 partition) is this instance's.
        wait_for(
            lambda: second.metric("footfall_sink_assigned_partitions") == 4 + 1,  # type: ignore[union-attr]
            40,
            "the new instance to hold all 5 partitions",
        )
        asyncio.run(produce(broker, topic, second_half))
        wait_for(lambda: checkpointed(record_dir, topic) >= len(records), 30, "the second half to land")
        workers = second.worker_pids()
        assert second.terminate() == 0
        assert all(_dead(pid) for pid in workers), "SIGTERM left workers running"
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert all(_dead(pid) for pid in orphans)
    assert "supervisor gone; draining and exiting" in log.read_text()
    assert compare([v for _, v in records], landed(record_dir, topic)) == (0, 0, 0), f"log={log}"
