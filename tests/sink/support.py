"""Helpers for the sink tests: produce reports, run ``python -m sink``, read what landed."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from footfall import promtext
from footfall.generator import day_start_ms, original_activities, original_visits, user_id
from footfall.kafka import HEADER_RECEIVED_MS, HEADER_REQUEST_ID, HEADER_SCHEMA, HEADER_TYPE
from footfall.reports import SCHEMA_VERSION, ReportType, encode_report
from sink.consumer import TopicPartition
from sink.settings import SinkSettings
from sink.supervisor import Supervisor
from stack.broker import free_port

REPO = Path(__file__).resolve().parents[2]


class FakeRecord(NamedTuple):
    """Stands in for aiokafka's ConsumerRecord in unit tests (same attribute names)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def make_records(
    seed: int, users: int, kind: ReportType = ReportType.VISIT, days: int = 1
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of generated reports: ``users`` users x ``days`` days x 12."""
    rng = random.Random(seed)
    out = []
    for u in range(users):
        uid = user_id(rng)
        for d in range(days):
            day_ms = day_start_ms(__import__("datetime").date(2018, 1, 1), d + u % 2)
            reports = (
                original_visits(rng, uid, day_ms) if kind is ReportType.VISIT else original_activities(rng, uid, day_ms)
            )
            out.extend((str(uid).encode(), encode_report(r)) for r in reports)
    return out


async def produce(
    brokers: str,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    kind: ReportType = ReportType.VISIT,
    *,
    timestamp_ms: Callable[[int], int] | None = None,
    headers: Callable[[int], list[tuple[str, bytes]]] | None = None,
) -> None:
    """Produce like the gateway: key=userId, value=report, gateway headers, timestamp ms."""
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i, (key, value) in enumerate(records):
            now = int(time.time() * 1000)
            hdrs = (
                headers(i)
                if headers
                else [
                    (HEADER_TYPE, kind.value.encode()),
                    (HEADER_SCHEMA, str(SCHEMA_VERSION).encode()),
                    (HEADER_RECEIVED_MS, str(now).encode()),
                    (HEADER_REQUEST_ID, f"req-{i}".encode()),
                ]
            )
            ts = timestamp_ms(i) if timestamp_ms else now
            futures.append(await producer.send(topic, value, key=key, headers=hdrs, timestamp_ms=ts))
        for fut in futures:
            await fut
    finally:
        await producer.stop()


def landed(record_directory: Path, topic: str) -> collections.Counter[bytes]:
    """Multiset of lines in ``<DIR>/<topic>/date=*/*.jsonl``."""
    lines: collections.Counter[bytes] = collections.Counter()
    for path in (record_directory / topic).glob("date=*/*.jsonl"):
        data = path.read_bytes()
        lines.update(line for line in data.split(b"\n") if line)
    return lines


def checkpointed(record_directory: Path, topic: str) -> int:
    """Records the checkpoints say are landed (offset + 1 summed over partitions; no poison)."""
    total = 0
    for path in (record_directory / "_footfall" / "checkpoints" / topic).glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            total += int(json.loads(path.read_bytes())["offset"]) + 1
    return total


def compare(expected: Sequence[bytes], got: collections.Counter[bytes]) -> tuple[int, int, int]:
    """(lost, duplicated, unexpected) of ``got`` against the ``expected`` values."""
    want = collections.Counter(expected)
    lost = sum((want - got).values())
    extra = got - want
    duplicated = sum(min(n, extra[v]) for v, n in extra.items() if v in want)
    unexpected = sum(n for v, n in extra.items() if v not in want)
    return lost, duplicated, unexpected


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def supervisor_settings(tmp_path: Path, **kw: object) -> SinkSettings:
    """Settings of a supervisor under test: one group, ``tmp_path`` as the record directory."""
    return SinkSettings(groups=["g:visit"], record_directory=str(tmp_path), **kw)  # type: ignore[arg-type]


def run_supervisor(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    """Run ``sup`` in a thread (drive it through ``sup.signals``); its exit code lands in the list."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    thread.start()
    return thread, result


def children(pid: int) -> list[int]:
    """Direct child pids (Linux /proc)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


class SinkProcess:
    """``python -m sink`` as a subprocess (its own process group, so a kill takes everything)."""

    def __init__(
        self,
        brokers: str,
        groups: Sequence[str],
        record_directory: Path,
        *,
        workers: int = 1,
        extra: Sequence[str] = (),
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "sink",
            "--brokers",
            brokers,
            "--concurrent-count",
            str(workers),
            "--record-directory",
            str(record_directory),
            "--metrics-port",
            str(self.metrics_port),
            "--session-timeout",
            "6",
            "--flush-interval",
            "0.3",
            "--shutdown-timeout",
            "10",
            *[a for g in groups for a in ("--groups", g)],
            *extra,
        ]
        self.workers = workers
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkProcess:
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log, start_new_session=True, cwd=REPO)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """Worker processes (children running the spawn bootstrap, not the resource tracker)."""
        out = []
        for pid in children(self.pid):
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmd:
                    out.append(pid)
        return out

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 40.0) -> None:
        wait_for(lambda: self.poll() is None and self.ready(), timeout, "the sink to be ready")

    def poll(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful), wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the supervisor and every worker at once (the whole process group)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` in /metrics."""
        _status, text = self.get("/metrics")
        return promtext.total(text, name, **labels)

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


class StandInConsumer:
    """Stands in for ``SinkConsumer`` where a group worker seeks, pauses, resumes and commits (unit tests)."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.paused: set[TopicPartition] = set()
        self.moved: dict[TopicPartition, int] = {}  # where "aiokafka" moved a position back to

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    def is_paused(self, tp: TopicPartition) -> bool:
        return tp in self.paused

    def moved_back(self, tp: TopicPartition, expected: int) -> int | None:
        return self.moved.get(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        return True
