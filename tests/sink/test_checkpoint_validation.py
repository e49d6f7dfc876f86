"""Checkpoints are validated on load and against their segment: a bad one touches nothing.

Unit level (real files on tmp_path, no broker): every corruption the issue lists is a
:class:`CheckpointError` naming the file and the partition, and recovery then neither
truncates nor deletes anything. The worker-level behaviour (that partition paused, the
others landing) is in ``test_bad_checkpoint_pauses_only_its_partition``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sink.checkpoint import Checkpoint, CheckpointStore
from sink.errors import CheckpointError
from sink.writer import PartitionWriter
from tests.sink.support import SinkProcess, compare, landed, make_records, produce, wait_for

DAY = 17532  # 2018-01-01


def _writer(root: Path, partition: int = 3) -> PartitionWriter:
    return PartitionWriter(root, "visit", partition, CheckpointStore(root))


def _land(root: Path, count: int = 40, partition: int = 3) -> Path:
    """Land ``count`` records (offsets 0..count-1) in partition ``partition``; returns its checkpoint file."""
    w = _writer(root, partition)
    w.recover()
    data = b"".join(b'{"o":%d,"pad":"%s"}\n' % (o, b"x" * (o % 7)) for o in range(count))
    w.append(data, count, count - 1, 0, DAY)
    assert w.commit()
    w.close()
    return CheckpointStore(root).path("visit", partition)


def _snapshot(root: Path) -> dict[str, str]:
    """Digest of every file under ``root`` (to prove that nothing was touched)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "locks" not in p.parts
    }


def _edit(field: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        doc = json.loads(path.read_bytes())
        doc[field] = change(doc[field])
        path.write_text(json.dumps(doc))

    return apply


def _replace(content: bytes) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        path.write_bytes(content)

    return apply


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _half_length_on_a_line_end(path: Path) -> None:
    doc = json.loads(path.read_bytes())
    segment = path.parents[3] / doc["segment"]
    data = segment.read_bytes()
    doc["length"] = data.rindex(b"\n", 0, len(data) // 2) + 1  # a real line end, but not the last line's
    path.write_text(json.dumps(doc))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty object": (_replace(b"{}"), "missing required field"),
    "empty file": (_replace(b""), "is empty"),
    "garbage": (_replace(b"\x00\xffnot json"), "is not a checkpoint"),
    "half-written JSON": (_replace(b'{"offset": 39, "segm'), "is not a checkpoint"),
    "a directory": (_directory, "is a directory"),
    "offset halved": (_edit("offset", lambda o: o // 2), "do not fit below offset"),  # type: ignore[operator]
    "offset negative": (_edit("offset", lambda o: -5), "is negative"),
    "length halved mid-line": (_edit("length", lambda n: n // 2 + 3), "not at a line end"),  # type: ignore[operator]
    "length halved on a line end": (_half_length_on_a_line_end, "does not end at the last line landed"),
    "length past the file": (_edit("length", lambda n: n + 100), "data was lost"),  # type: ignore[operator]
    "offset as a string": (_edit("offset", str), "Expected `int`"),
    "segment of another partition": (
        _edit("segment", lambda s: str(s).replace("visit+3+", "visit+4+")),
        "not a segment file of this partition",
    ),
    "last_line_offset past the offset": (
        _edit("last_line_offset", lambda o: o + 1000),  # type: ignore[operator]
        "outside the segment's offsets",
    ),
    "segment outside the directory": (_edit("segment", lambda s: "../../etc/passwd"), "inside the record directory"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_bad_checkpoint_is_a_named_error_and_touches_nothing(name: str, tmp_path: Path) -> None:
    path = _land(tmp_path)
    corrupt, reason = CORRUPTIONS[name]
    corrupt(path)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        _writer(tmp_path).recover()
    message = str(caught.value)
    assert reason in message
    assert str(path) in message and "visit[3]" in message  # names the file and the partition
    assert "\n" not in message  # one line, not a traceback
    assert _snapshot(tmp_path) == before  # no truncate, no delete, no rewrite


def test_missing_checkpoint_with_segments_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = _land(tmp_path)
    path.unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        _writer(tmp_path).recover()
    assert _snapshot(tmp_path) == before


def test_explicit_empty_state_and_older_checkpoints_load(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save("visit", 1, Checkpoint())
    assert _writer(tmp_path, 1).recover() == Checkpoint()
    # Written by a sink before lines/last_line_crc/generation existed: still valid.
    path = _land(tmp_path, count=10, partition=2)
    doc = json.loads(path.read_bytes())
    for key in ("lines", "last_line_crc", "last_line_offset", "generation"):
        del doc[key]
    path.write_text(json.dumps(doc))
    assert _writer(tmp_path, 2).recover().offset == 9


def test_a_valid_checkpoint_survives_a_torn_tail(tmp_path: Path) -> None:
    """Bytes past the checkpoint (a crash mid-write) are still cut: validation looks below ``length`` only."""
    path = _land(tmp_path, count=10)
    segment = tmp_path / json.loads(path.read_bytes())["segment"]
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b'{"o":10}\n{"o":1')
    assert _writer(tmp_path).recover().offset == 9
    assert segment.stat().st_size == size


# -- the worker: that partition waits, the others go on ----------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_bad_checkpoint_pauses_only_its_partition(broker: str, record_dir: Path, tmp_path: Path) -> None:
    """A real sink: partition 0's checkpoint is ``{}``; partition 1 keeps landing; fixing the file resumes 0."""
    import asyncio

    from footfall.kafka import ensure_topics, partition_for

    topic = f"bad-ckpt-{time.monotonic_ns() % 10**9}"
    asyncio.run(ensure_topics(broker, [topic], 2, 1))
    records = make_records(12, 40)  # 480 reports over both partitions
    first, second = records[:240], records[240:]
    log = tmp_path / "sink.log"
    args = (broker, [f"bad:{topic}"], record_dir)
    with SinkProcess(*args, log_path=log) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, first))
        wait_for(lambda: sum(landed(record_dir, topic).values()) == len(first), 30, "the first records to land")
        assert sink.terminate() == 0

    path = CheckpointStore(record_dir).path(topic, 0)
    good = path.read_bytes()
    path.write_bytes(b"{}")
    before = {p: p.read_bytes() for p in (record_dir / topic).glob("date=*/*+0+*.jsonl")}
    in_p0 = [v for k, v in second if partition_for(k, 2) == 0]
    in_p1 = [v for k, v in second if partition_for(k, 2) == 1]
    assert in_p0 and in_p1

    with SinkProcess(*args, log_path=log) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, second))
        want_p1 = len(first) + len(in_p1)  # partition 1 goes on
        wait_for(
            lambda: (
                sum(landed(record_dir, topic).values()) >= want_p1
                and sink.metric("footfall_sink_bad_checkpoint_partitions") == 1
            ),
            30,
            "partition 1 to land while partition 0 waits",
        )
        assert {p: p.read_bytes() for p in before} == before  # partition 0's files untouched
        assert sum(landed(record_dir, topic).values()) == want_p1
        text = log.read_text()
        assert f"{path}" in text and f"{topic}[0]" in text and "missing required field" in text
        assert "Traceback" not in text
        assert sink.ready()

        path.write_bytes(good)  # the operator restores it: partition 0 resumes
        values = [v for _, v in records]
        wait_for(lambda: compare(values, landed(record_dir, topic)) == (0, 0, 0), 30, "every record exactly once")
        wait_for(lambda: sink.metric("footfall_sink_bad_checkpoint_partitions") == 0, 10, "the gauge to clear")
        assert sink.terminate() == 0


async def test_retry_lander_waits_on_an_unreadable_source_checkpoint(record_dir: Path) -> None:
    """A parked record whose source partition's checkpoint is invalid is not landed, nor skipped: it waits."""
    from sink.consumer import TopicPartition
    from sink.side_topics import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC
    from tests.sink.support import FakeRecord
    from tests.sink.test_gaps import _Harness

    h = _Harness(record_dir)
    CheckpointStore(record_dir).path("visit", 0).write_bytes(b"\x00 half-written")  # the source partition's checkpoint
    retry = TopicPartition("visit.retry", 0)
    headers = ((HEADER_SOURCE_TOPIC, b"visit"), (HEADER_SOURCE_PARTITION, b"0"), (HEADER_SOURCE_OFFSET, b"5"))
    record = FakeRecord("visit.retry", 0, 0, DAY * 86_400_000, b"k", b'{"o":5}', headers)
    await h.worker._handle(retry, [record])  # type: ignore[list-item]
    await h.worker.commit()
    assert h.lines() == 0
    assert h.fake.seeks == [(retry, 0)] and retry in h.fake.paused  # fetched again later
    h.close()
