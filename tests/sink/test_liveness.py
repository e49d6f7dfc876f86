"""A worker whose fetcher died, that fetches nothing while its partitions have lag, or that is
frozen, is restarted by its supervisor; ``/readyz`` is false meanwhile; every record lands once.

Real embedded broker, real ``python -m sink``. The fetch faults are injected into one
worker by a signal (tests/sink/fetch_faults/sitecustomize.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from tests.sink.support import REPO, SinkProcess, checkpointed, compare, landed, make_records, produce, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

_FAULTS = REPO / "tests" / "sink" / "fetch_faults"


@contextlib.contextmanager
def readyz_statuses(sink: SinkProcess) -> Iterator[list[int]]:
    """Every ``/readyz`` status seen while the block runs, sampled every 20 ms in a thread.

    On Apache Kafka a restarted worker rejoins its group in about a second (the old member
    left it cleanly), so the unready window can end before the test has produced what it
    produces after the fault: watching from the fault on sees it however short it is.
    """
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(sink.get("/readyz")[0])
            done.wait(0.02)

    watcher = threading.Thread(target=watch, name="readyz-watch", daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join(5)


@pytest.mark.parametrize(
    ("signum", "reason"),
    [(signal.SIGUSR1, "fetcher"), (signal.SIGUSR2, "no_progress")],
    ids=["fetch-task-died", "fetches-hang"],
)
def test_stalled_worker_is_restarted_and_not_ready_meanwhile(
    broker: str, record_dir: Path, tmp_path: Path, signum: int, reason: str
) -> None:
    topic = f"visit-{uuid.uuid4().hex[:10]}"
    asyncio.run(ensure_topics(broker, [topic], 2, 1))
    records = make_records(7, 40)
    before, after = records[:240], records[240:]
    log = tmp_path / "sink.log"
    env = {"PYTHONPATH": os.pathsep.join([str(_FAULTS), str(REPO)]), "FOOTFALL_TEST_FETCH_FAULTS": "1"}
    with SinkProcess(
        broker, [f"live-{topic}:{topic}"], record_dir, extra=["--stall-timeout", "3"], log_path=log, env=env
    ) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, before))
        wait_for(lambda: checkpointed(record_dir, topic) >= len(before), 30, "the first records to land")
        (worker,) = sink.worker_pids()
        with readyz_statuses(sink) as statuses:
            os.kill(worker, signum)
            # A fetch already in flight when the fault is armed may still bring the next records (it
            # long-polls); every fetch after it fails or hangs. So a first part, time for that fetch to
            # end (landed, or at most a few long polls), then the part that only a faulty fetch can meet.
            first, rest = after[: len(after) // 2], after[len(after) // 2 :]
            asyncio.run(produce(broker, topic, first))
            deadline = time.monotonic() + 3
            while checkpointed(record_dir, topic) < len(before) + len(first) and time.monotonic() < deadline:
                time.sleep(0.05)
            asyncio.run(produce(broker, topic, rest))
            # Not ready from the moment the stall is seen until a fresh worker consumes again.
            wait_for(lambda: 503 in statuses, 30, "/readyz to turn false", interval=0.05)
            wait_for(lambda: worker not in sink.worker_pids() and len(sink.worker_pids()) == 1, 30, "a new worker")
        wait_for(lambda: checkpointed(record_dir, topic) >= len(records), 40, "the records after the fault to land")
        sink.wait_ready()
        assert sink.metric("footfall_sink_worker_stalls_total", reason=reason) == 1
        assert sink.metric("footfall_sink_worker_restarts_total") == 1
        # The lag is measured every check interval: on Kafka the new worker can be ready before its first.
        wait_for(lambda: "lag 0 records" in sink.get("/readyz")[1], 10, "/readyz to report lag 0")
        status, body = sink.get("/readyz")
        assert status == 200
        assert "lag 0 records" in body
        assert sink.terminate() == 0
    assert "worker stalled; restarting" in log.read_text()
    assert compare([v for _, v in records], landed(record_dir, topic)) == (0, 0, 0), f"log={log}"


def test_a_frozen_worker_is_killed_and_replaced(broker: str, record_dir: Path, tmp_path: Path) -> None:
    """A SIGSTOPped worker cannot notice anything itself: the supervisor sees its metrics snapshot
    go stale (older than --stall-timeout and --session-timeout), kills it and starts another."""
    topic = f"visit-{uuid.uuid4().hex[:10]}"
    asyncio.run(ensure_topics(broker, [topic], 2, 1))
    records = make_records(9, 40)
    before, after = records[:240], records[240:]
    log = tmp_path / "sink.log"
    with SinkProcess(
        broker, [f"frozen-{topic}:{topic}"], record_dir, extra=["--stall-timeout", "3"], log_path=log
    ) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, before))
        wait_for(lambda: checkpointed(record_dir, topic) >= len(before), 30, "the first records to land")
        (worker,) = sink.worker_pids()
        os.kill(worker, signal.SIGSTOP)
        try:
            asyncio.run(produce(broker, topic, after))
            wait_for(lambda: sink.get("/readyz")[0] == 503, 30, "/readyz to turn false", interval=0.05)
            wait_for(lambda: worker not in sink.worker_pids() and len(sink.worker_pids()) == 1, 30, "a new worker")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGCONT)
        wait_for(lambda: checkpointed(record_dir, topic) >= len(records), 40, "the records after the freeze to land")
        sink.wait_ready()
        assert sink.metric("footfall_sink_workers_killed_unresponsive_total") == 1
        assert sink.terminate() == 0
    assert "worker unresponsive" in log.read_text()
    assert compare([v for _, v in records], landed(record_dir, topic)) == (0, 0, 0), f"log={log}"
