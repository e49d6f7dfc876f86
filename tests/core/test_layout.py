"""Record layout: names, parsing, and topic names that would escape the directory."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from footfall.errors import ConfigError
from footfall.layout import check_topic, parse_segment_name, segment_name, segment_path


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
