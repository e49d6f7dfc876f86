"""The open segment deleted, or replaced (``sed -i``), under a running sink.

Nothing may count as written that is not in a file the readers see: the sink notices at the
next flush (inode and size of the open segment), starts a new segment from its checkpoint,
and lands the unconfirmed records again there. Unit tests on the writer (real files), then a
real sink on the embedded broker.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from footfall.kafka import ensure_topics
from sink.checkpoint import CheckpointStore
from sink.errors import SegmentLostError
from sink.writer import PartitionWriter
from tests.sink.support import SinkProcess, compare, landed, make_records, produce, wait_for

DAY = 17532  # 2018-01-01


def _put(w: PartitionWriter, offsets: range) -> None:
    data = b"".join(b'{"o":%d}\n' % o for o in offsets)
    w.append(data, len(offsets), offsets[-1], offsets[0], DAY)


def _writer(root: Path) -> PartitionWriter:
    w = PartitionWriter(root, "visit", 0, CheckpointStore(root))
    w.recover()
    return w


def _open_segment(root: Path) -> Path:
    (path,) = (root / "visit").glob("date=*/*.jsonl")
    return path


def _delete(path: Path) -> None:
    path.unlink()


def _sed_i(path: Path) -> None:
    """What ``sed -i`` does: write an edited copy, rename it over the original (a new inode)."""
    tmp = path.with_name(path.name + ".sed")
    tmp.write_bytes(path.read_bytes().replace(b'"o":1}', b'"o":"one"}'))
    tmp.replace(path)


def _truncate(path: Path) -> None:
    os.truncate(path, 0)


@pytest.mark.parametrize("change", [_delete, _sed_i, _truncate], ids=["deleted", "replaced", "truncated"])
def test_lost_open_segment_is_caught_before_its_records_count(tmp_path: Path, change: object) -> None:
    w = _writer(tmp_path)
    _put(w, range(0, 10))
    assert w.commit()
    seg = _open_segment(tmp_path)
    _put(w, range(10, 20))
    change(seg)  # type: ignore[operator]
    with pytest.raises(SegmentLostError) as caught:
        w.commit()
    assert str(seg) in str(caught.value)
    assert caught.value.landed_lines == 10  # what the checkpoint covered in the lost file
    # Nothing of 10..19 was checkpointed; the checkpoint no longer points into the lost file.
    ckpt = CheckpointStore(tmp_path).load("visit", 0)
    assert ckpt is not None and ckpt.offset == 9 and ckpt.segment is None

    # As the worker does: back to the checkpoint, consume 10.. again into a new segment.
    w.reset_to_checkpoint()
    _put(w, range(10, 20))
    assert w.commit()
    ckpt = CheckpointStore(tmp_path).load("visit", 0)
    assert ckpt is not None and ckpt.segment is not None and ckpt.segment.endswith("+00000000000000000010.jsonl")
    assert (tmp_path / ckpt.segment).read_bytes() == b"".join(b'{"o":%d}\n' % o for o in range(10, 20))
    w.close()
    assert _writer(tmp_path).recover().offset == 19  # a restart recovers without complaint


def test_segment_lost_before_rotation_is_caught(tmp_path: Path) -> None:
    """A day change closes the open segment: it is checked then too, or its records would be on no disk."""
    w = _writer(tmp_path)
    _put(w, range(0, 5))
    assert w.commit()
    _put(w, range(5, 8))
    _open_segment(tmp_path).unlink()
    with pytest.raises(SegmentLostError):
        w.append(b'{"o":8}\n', 1, 8, 8, DAY + 1)
    w.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_sink_lands_again_after_its_open_segment_is_deleted(broker: str, record_dir: Path, tmp_path: Path) -> None:
    """Real sink, one partition: delete its open segment, produce more; the new records land once, in a new file."""
    topic = f"vanish-{os.getpid()}-{id(tmp_path) % 10**6}"
    asyncio.run(ensure_topics(broker, [topic], 1, 1))
    first, second = make_records(31, 20), make_records(32, 20)
    log = tmp_path / "sink.log"
    with SinkProcess(broker, [f"vanish:{topic}"], record_dir, log_path=log) as sink:
        sink.wait_ready()
        asyncio.run(produce(broker, topic, first))
        wait_for(lambda: sum(landed(record_dir, topic).values()) == len(first), 30, "the first records to land")
        wait_for(lambda: sink.metric("footfall_sink_records_written_total") == len(first), 10, "the written count")
        (segment,) = (record_dir / topic).glob("date=*/*.jsonl")
        segment.unlink()  # no traffic meanwhile: the deleted file held exactly `first`

        asyncio.run(produce(broker, topic, second))
        values = [v for _, v in second]
        wait_for(lambda: compare(values, landed(record_dir, topic)) == (0, 0, 0), 30, "the new records exactly once")
        wait_for(lambda: sink.metric("footfall_sink_segments_lost_total") == 1, 10, "the lost segment to be counted")
        # Counted as written: the first records once, the second once (never what went to the unlinked file).
        wait_for(
            lambda: sink.metric("footfall_sink_records_written_total") == len(first) + len(second),
            10,
            "written = each record once",
        )
        assert sink.ready()
        assert sink.terminate() == 0
    assert any("open segment deleted or replaced" in line and '"level":"error"' in line for line in log.open())
    # A restart finds the files and checkpoint in agreement.
    with SinkProcess(broker, [f"vanish:{topic}"], record_dir, log_path=log) as sink:
        sink.wait_ready()
        assert sink.metric("footfall_sink_bad_checkpoint_partitions") == 0
        assert sink.terminate() == 0
    assert compare([v for _, v in second], landed(record_dir, topic)) == (0, 0, 0)
