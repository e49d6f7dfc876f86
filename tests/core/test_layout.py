"""Record layout: names, parsing, and topic names that would escape the directory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from footfall.errors import ConfigError
from footfall.layout import (
    MS_PER_DAY,
    SegmentName,
    check_topic,
    day_of,
    folder_of,
    parse_segment_name,
    partition_name,
    segment_files,
    segment_name,
    segment_path,
)


def test_segment_path_is_hive_style(tmp_path: Path) -> None:
    path = segment_path(tmp_path, "visit", dt.date(2018, 1, 2), 3, 42)
    assert path == tmp_path / "visit" / "date=2018-01-02" / "visit+3+00000000000000000042.jsonl"
    assert parse_segment_name(path.name) == ("visit", 3, 42, 0)


@pytest.mark.parametrize("name", ["x.jsonl", "visit+1+42.jsonl", "visit+a+00000000000000000042.jsonl", "a/b+1+x"])
def test_other_files_are_not_segments(name: str) -> None:
    assert parse_segment_name(name) is None


@pytest.mark.parametrize("topic", ["", ".", "..", "../etc", "/abs", "a/b", "a\\b", "x" * 250, "sp ace", "nul\0"])
def test_unsafe_topics_are_refused(topic: str) -> None:
    with pytest.raises(ConfigError, match="invalid topic name"):
        check_topic(topic)
    with pytest.raises(ConfigError):
        segment_name(topic, 0, 0)


@pytest.mark.parametrize("topic", ["visit", "visit.dlq", "a-b_c.1", "x" * 249])
def test_legal_topics_pass(topic: str) -> None:
    assert check_topic(topic) == topic


def test_a_later_generation_has_its_own_names(tmp_path: Path) -> None:
    path = segment_path(tmp_path, "visit", dt.date(2018, 1, 2), 3, 0, generation=2)
    assert path.name == "visit+3+g2+00000000000000000000.jsonl"
    assert parse_segment_name(path.name) == ("visit", 3, 0, 2)
    assert path != segment_path(tmp_path, "visit", dt.date(2018, 1, 2), 3, 0)


def _touch(root: Path, relative: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for relative in [
        "visit/date=2018-01-01/visit+1+00000000000000000000.jsonl",
        "visit/date=2018-01-02/visit+1+00000000000000000040.jsonl",
        "visit/date=2018-01-02/visit+11+00000000000000000000.jsonl",
        "visit/date=2018-01-02/visit+2+g1+00000000000000000000.jsonl",
        "visit/date=2018-01-02/visit+1+g2+00000000000000000005.jsonl",
        "activity/date=2018-01-01/activity+1+00000000000000000007.jsonl",
        # A retry partition's records land in the base topic's folder, named after the retry topic.
        "visit/date=2018-01-02/visit.retry+1+00000000000000000003.jsonl",
        # Not segments: a stray file, an editor's backup, a temp file, files outside a date folder,
        # one too deep, and a segment name in another topic's folder.
        "visit/date=2018-01-01/notes.jsonl",
        "visit/date=2018-01-01/visit+1+00000000000000000000.jsonl~",
        "visit/date=2018-01-01/visit+1+00000000000000000099.jsonl.tmp",
        "visit/visit+1+00000000000000000000.jsonl",
        "visit/backup/visit+1+00000000000000000000.jsonl",
        "visit/date=2018-01-01/deeper/visit+1+00000000000000000000.jsonl",
        "activity/date=2018-01-01/visit+1+00000000000000000003.jsonl",
        "activity/date=2018-01-01/visit.retry+1+00000000000000000004.jsonl",
        "visit.retry/date=2018-01-01/visit.retry+1+00000000000000000005.jsonl",
    ]:
        _touch(tmp_path, relative)
    return tmp_path


def _found(root: Path, topic: str | None = None, partition: int | None = None) -> set[tuple[str, SegmentName]]:
    return {(path.relative_to(root).as_posix(), name) for path, name in segment_files(root, topic, partition)}


def test_segment_files_finds_every_segment_and_what_its_name_says(tree: Path) -> None:
    assert _found(tree) == {
        ("visit/date=2018-01-01/visit+1+00000000000000000000.jsonl", SegmentName("visit", 1, 0)),
        ("visit/date=2018-01-02/visit+1+00000000000000000040.jsonl", SegmentName("visit", 1, 40)),
        ("visit/date=2018-01-02/visit+11+00000000000000000000.jsonl", SegmentName("visit", 11, 0)),
        ("visit/date=2018-01-02/visit+2+g1+00000000000000000000.jsonl", SegmentName("visit", 2, 0, 1)),
        ("visit/date=2018-01-02/visit+1+g2+00000000000000000005.jsonl", SegmentName("visit", 1, 5, 2)),
        ("activity/date=2018-01-01/activity+1+00000000000000000007.jsonl", SegmentName("activity", 1, 7)),
        ("visit/date=2018-01-02/visit.retry+1+00000000000000000003.jsonl", SegmentName("visit.retry", 1, 3)),
    }


def test_segment_files_of_a_retry_topic_are_in_its_base_topics_folder(tree: Path) -> None:
    assert folder_of("visit.retry") == "visit"
    assert folder_of("visit") == "visit"
    assert _found(tree, "visit.retry") == {
        ("visit/date=2018-01-02/visit.retry+1+00000000000000000003.jsonl", SegmentName("visit.retry", 1, 3))
    }
    assert {name for _, name in _found(tree, "visit.retry", 1)} == {SegmentName("visit.retry", 1, 3)}
    assert _found(tree, "visit.retry", 0) == set()


def test_segment_files_narrows_to_a_topic(tree: Path) -> None:
    assert {name for _, name in _found(tree, "activity")} == {SegmentName("activity", 1, 7)}
    assert len(_found(tree, "visit")) == 5
    assert _found(tree, "absent") == set()


@pytest.mark.parametrize("topic", ["visit", None])
def test_segment_files_narrows_to_a_partition_exactly(tree: Path, topic: str | None) -> None:
    # Partition 1 is not 11, nor the generation-1 files of partition 2.
    names = {name for _, name in _found(tree, topic, 1)}
    expected = {SegmentName("visit", 1, 0), SegmentName("visit", 1, 40), SegmentName("visit", 1, 5, 2)}
    others = {SegmentName("activity", 1, 7), SegmentName("visit.retry", 1, 3)}
    assert names == (expected if topic else expected | others)
    assert {name for _, name in _found(tree, topic, 11)} == {SegmentName("visit", 11, 0)}
    assert {name for _, name in _found(tree, topic, 2)} == {SegmentName("visit", 2, 0, 1)}


def test_segment_files_in_log_order_sort_by_generation_then_offset(tree: Path) -> None:
    names = sorted((name for _, name in segment_files(tree, "visit", 1)), key=lambda n: (n.generation, n.start_offset))
    assert [(n.generation, n.start_offset) for n in names] == [(0, 0), (0, 40), (2, 5)]


def test_segment_files_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert list(segment_files(tmp_path / "nothing-here")) == []


@pytest.mark.parametrize("topic", ["..", "a/b", "*"])
def test_segment_files_refuses_an_unsafe_topic(tmp_path: Path, topic: str) -> None:
    with pytest.raises(ConfigError, match="invalid topic name"):
        list(segment_files(tmp_path, topic))


def test_a_timestamp_lands_in_the_utc_day_it_falls_in() -> None:
    assert MS_PER_DAY == 24 * 3600 * 1000
    midnight = 1514764800000  # 2018-01-01T00:00:00Z, day 17532
    assert day_of(midnight) == 17532
    assert day_of(midnight - 1) == 17531  # 1 ms before midnight is still the day before
    assert day_of(midnight + MS_PER_DAY - 1) == 17532


def test_partition_name_is_topic_and_partition_in_brackets() -> None:
    assert partition_name("visit.retry", 3) == "visit.retry[3]"
