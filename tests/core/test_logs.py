"""JSON log lines, and the rate limit on a library's repeated lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from footfall.logs import JsonFormatter, RepeatFilter, configure_logging


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, Clock]]:
    stream, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(RepeatFilter(interval=10.0, clock=clock))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield stream, clock
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_repeated_library_errors_pass_once_per_interval_with_a_count(captured: tuple[io.StringIO, Clock]) -> None:
    stream, clock = captured
    kafka = logging.getLogger("aiokafka.conn")
    for attempt in range(150):  # what a dead broker costs in 30 s
        kafka.error("Unable connect to node with id %s: %s", attempt % 3, "Connect call failed")
        clock.now += 0.2
    got = lines(stream)
    assert len(got) == 3  # at 0 s, 10 s, 20 s
    assert "repeated" not in got[0]
    assert [g["repeated"] for g in got[1:]] == [49, 49]
    assert got[1]["message"].startswith("Unable connect to node with id")  # type: ignore[union-attr]


def test_own_lines_and_distinct_messages_are_never_held_back(captured: tuple[io.StringIO, Clock]) -> None:
    stream, _clock = captured
    for _ in range(5):
        logging.getLogger("gateway").warning("worker died; restarting it")
    logging.getLogger("aiokafka").error("Unable connect to %s", "a")
    logging.getLogger("aiokafka").error("Unable to update metadata from %s", "a")
    logging.getLogger("aiokafka").warning("Unable connect to %s", "a")  # another level: another line
    assert len(lines(stream)) == 8


def test_configure_logging_installs_the_rate_limit() -> None:
    stream = io.StringIO()
    configure_logging("info", "test", stream)
    try:
        for _ in range(20):
            logging.getLogger("aiokafka").error("Unable connect to %s", "127.0.0.1:1")
        assert len(stream.getvalue().splitlines()) == 1
    finally:
        logging.getLogger().handlers.clear()
