"""PartitionWriter and checkpoints on tmp_path: no broker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footfall.layout import MS_PER_DAY, parse_segment_name
from sink.checkpoint import Checkpoint, CheckpointStore, ranges_add, ranges_contain
from sink.errors import RecoveryError, SegmentWriteError
from sink.writer import PartitionWriter

DAY = 17532  # 2018-01-01


def _writer(root: Path, **kw: object) -> PartitionWriter:
    return PartitionWriter(root, "visit", 3, CheckpointStore(root), **kw)  # type: ignore[arg-type]


def _lines(root: Path, topic: str = "visit") -> list[bytes]:
    out = []
    for path in sorted((root / topic).glob("date=*/*.jsonl"), key=lambda p: parse_segment_name(p.name)[2]):  # type: ignore[index]
        out += [line for line in path.read_bytes().split(b"\n") if line]
    return out


def _put(w: PartitionWriter, offsets: range, day: int = DAY) -> None:
    data = b"".join(b'{"o":%d}\n' % o for o in offsets)
    w.append(data, len(offsets), offsets[-1], offsets[0], day)


def test_commit_writes_layout_and_checkpoint(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    assert w.recover().offset == -1
    _put(w, range(0, 5))
    assert w.commit()
    files = list((tmp_path / "visit" / "date=2018-01-01").iterdir())
    assert [f.name for f in files] == ["visit+3+00000000000000000000.jsonl"]
    ckpt = CheckpointStore(tmp_path).load("visit", 3)
    assert ckpt is not None and ckpt.offset == 4 and ckpt.length == files[0].stat().st_size
    assert ckpt.segment == "visit/date=2018-01-01/visit+3+00000000000000000000.jsonl"
    assert not w.commit()  # nothing new


def test_recover_truncates_tail_and_deletes_later_segments(tmp_path: Path) -> None:
    w = _writer(tmp_path, buffer_bytes=1024)
    w.recover()
    _put(w, range(0, 10))
    w.commit()
    _put(w, range(10, 300))  # written out (buffer full) but never committed
    _put(w, range(300, 310), day=DAY + 1)  # rotated into a new day's segment, never committed
    w.close()  # "crash"
    assert len(_lines(tmp_path)) > 10
    again = _writer(tmp_path)
    assert again.recover().offset == 9
    assert _lines(tmp_path) == [b'{"o":%d}' % o for o in range(10)]
    assert not (tmp_path / "visit" / "date=2018-01-02").exists() or not any(
        (tmp_path / "visit" / "date=2018-01-02").iterdir()
    )


def test_a_retry_partition_finds_its_own_segments_in_the_base_topic_folder(tmp_path: Path) -> None:
    """``visit.retry[3]`` lands in ``visit/`` beside ``visit[3]``: recovery truncates and deletes
    only the retry partition's uncommitted files, and leaves the source partition's alone."""
    store = CheckpointStore(tmp_path)
    source = PartitionWriter(tmp_path, "visit", 3, store)
    source.recover()
    _put(source, range(0, 5), day=DAY + 1)  # a later segment of visit[3], never committed by the retry writer
    source.commit()
    source.close()
    retry = PartitionWriter(tmp_path, "visit.retry", 3, store, out_topic="visit")
    retry.recover()
    _put(retry, range(0, 4))
    retry.commit()
    _put(retry, range(4, 8), day=DAY + 1)  # a new day: a second retry segment, never committed
    retry.fsync()  # written and synced, but not checkpointed
    retry.close()  # "crash"
    names = sorted(p.name for p in (tmp_path / "visit").glob("date=*/*.jsonl"))
    assert names == [
        "visit+3+00000000000000000000.jsonl",
        "visit.retry+3+00000000000000000000.jsonl",
        "visit.retry+3+00000000000000000004.jsonl",
    ]
    again = PartitionWriter(tmp_path, "visit.retry", 3, store, out_topic="visit")
    assert again.recover().offset == 3
    names = sorted(p.name for p in (tmp_path / "visit").glob("date=*/*.jsonl"))
    assert names == ["visit+3+00000000000000000000.jsonl", "visit.retry+3+00000000000000000000.jsonl"]
    assert (tmp_path / "visit" / "date=2018-01-02" / "visit+3+00000000000000000000.jsonl").read_bytes().count(
        b"\n"
    ) == 5


def test_segments_without_checkpoint_are_not_deleted(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.recover()
    _put(w, range(0, 3))
    w.commit()
    CheckpointStore(tmp_path).path("visit", 3).unlink()
    with pytest.raises(RecoveryError, match="no checkpoint"):
        _writer(tmp_path).recover()
    assert len(_lines(tmp_path)) == 3


def test_file_shorter_than_checkpoint_is_an_error(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.recover()
    _put(w, range(0, 3))
    w.commit()
    seg = next((tmp_path / "visit").glob("date=*/*.jsonl"))
    os.truncate(seg, 5)
    with pytest.raises(RecoveryError, match="data was lost"):
        _writer(tmp_path).recover()


def test_rotation_by_size_and_day(tmp_path: Path) -> None:
    w = _writer(tmp_path, segment_bytes=1024)
    w.recover()
    for start in range(0, 400, 40):
        _put(w, range(start, start + 40))
    _put(w, range(400, 410), day=DAY + 1)
    w.commit()
    segs = sorted((tmp_path / "visit").glob("date=*/*.jsonl"))
    assert len(segs) > 5
    assert all(s.stat().st_size <= 1024 for s in segs if "2018-01-01" in str(s))
    assert _lines(tmp_path) == [b'{"o":%d}' % o for o in range(410)]
    # each segment is named after its first offset
    for seg in segs:
        first = seg.read_bytes().split(b"\n", 1)[0]
        assert first == b'{"o":%d}' % parse_segment_name(seg.name).start_offset  # type: ignore[union-attr]


def test_retry_partition_lands_in_base_topic_directory(tmp_path: Path) -> None:
    w = PartitionWriter(tmp_path, "visit.retry", 0, CheckpointStore(tmp_path), out_topic="visit")
    w.recover()
    w.append(b"x\n", 1, 0, 0, DAY)
    w.mark_landed_from(2, 17)
    w.commit()
    assert [p.name for p in (tmp_path / "visit").glob("date=*/*.jsonl")] == ["visit.retry+0+00000000000000000000.jsonl"]
    assert CheckpointStore(tmp_path).load("visit.retry", 0).landed_from == {2: [(17, 17)]}  # type: ignore[union-attr]


def test_write_failure_then_reset_keeps_files_consistent(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.recover()
    _put(w, range(0, 3))
    w.commit()
    _put(w, range(3, 6))
    real_pwrite = os.pwrite

    def failing(fd: int, data: object, pos: int) -> int:
        raise OSError(28, "No space left on device")

    os.pwrite = failing  # type: ignore[assignment]
    try:
        with pytest.raises(SegmentWriteError) as info:
            w.commit()
        assert info.value.errno == 28
    finally:
        os.pwrite = real_pwrite
    w.reset_to_checkpoint()
    assert w.last_offset == 2
    _put(w, range(3, 6))
    w.commit()
    assert _lines(tmp_path) == [b'{"o":%d}' % o for o in range(6)]


def test_ranges() -> None:
    r: list[tuple[int, int]] = []
    for a, b in [(5, 7), (1, 2), (3, 4), (10, 10)]:
        r = ranges_add(r, a, b)
    assert r == [(1, 7), (10, 10)]
    assert ranges_contain(r, 1) and ranges_contain(r, 7) and ranges_contain(r, 10)
    assert not ranges_contain(r, 8) and not ranges_contain(r, 0) and not ranges_contain(r, 11)
    assert Checkpoint(parked=r).is_parked(4)


# A model of crashes: any interleaving of appends, commits, rotations and crashes (with
# garbage bytes left past the checkpoint) recovers to exactly the committed records.
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 60), st.integers(0, 2)),
        st.tuples(st.just("commit"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.integers(0, 200), st.just(0)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_crash_model_exactly_once(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]) -> None:
    root = tmp_path_factory.mktemp("model")
    w = _writer(root, buffer_bytes=2048, segment_bytes=4096)
    w.recover()
    committed = -1
    for op, n, extra in ops:
        if op == "append":
            start = w.last_offset + 1
            _put(w, range(start, start + n), day=DAY + extra)
        elif op == "commit":
            w.commit()
            committed = w.last_offset
        else:
            w.close()
            # garbage past the checkpoint, as a crash mid-write leaves it
            segs = list((root / "visit").glob("date=*/*.jsonl"))
            if segs and n:
                newest = max(segs, key=lambda p: parse_segment_name(p.name).start_offset)  # type: ignore[union-attr]
                with newest.open("ab") as f:
                    f.write(b"{partial" * (n // 8 + 1))
            w = _writer(root, buffer_bytes=2048, segment_bytes=4096)
            assert w.recover().offset == committed
    w.close()
    w = _writer(root)
    w.recover()
    assert _lines(root) == [b'{"o":%d}' % o for o in range(committed + 1)]


def test_day_of_record_timestamp() -> None:
    assert (DAY * MS_PER_DAY) // MS_PER_DAY == DAY


def test_rotation_by_age(tmp_path: Path) -> None:
    w = _writer(tmp_path, segment_age=0.001)
    w.recover()
    _put(w, range(0, 3))
    time.sleep(0.01)  # the segment ages (not waiting for a condition)
    _put(w, range(3, 6))
    w.commit()
    assert len(list((tmp_path / "visit").glob("date=*/*.jsonl"))) == 2
    assert _lines(tmp_path) == [b'{"o":%d}' % o for o in range(6)]


@pytest.mark.parametrize(("policy", "fsyncs"), [("always", True), ("commit", True), ("never", False)])
def test_fsync_policies(tmp_path: Path, policy: str, fsyncs: bool) -> None:
    w = PartitionWriter(
        tmp_path, "visit", 0, CheckpointStore(tmp_path, durable=policy != "never"), buffer_bytes=64, fsync=policy
    )  # type: ignore[arg-type]
    w.recover()
    for start in range(0, 200, 50):
        _put(w, range(start, start + 50))  # each append overflows the 64-byte buffer
    if policy == "always":
        assert len(w.fsync_seconds) >= 4  # fsynced after every write, before any commit
    w.commit()
    assert bool(w.fsync_seconds) is fsyncs
    assert CheckpointStore(tmp_path).load("visit", 0).offset == 199  # type: ignore[union-attr]
