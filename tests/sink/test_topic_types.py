"""Topics of the original web-service: no ``ff-type`` header, any name. ``--groups GROUP:TOPIC:TYPE``
names the report type, so their records land instead of going to the dead-letter topic."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from footfall.errors import ConfigError
from footfall.kafka import HEADER_TYPE, ensure_topics
from footfall.reports import ReportType
from sink.poison import PoisonCheck
from sink.settings import parse_groups, parse_topic_types
from tests.sink.support import FakeRecord, SinkProcess, checkpointed, compare, landed, make_records, produce, wait_for


def test_groups_may_name_the_report_type() -> None:
    specs = ["g:clicks:visit", "g:moves:activity", "g:visit"]
    assert parse_groups(specs) == {"g": ["clicks", "moves", "visit"]}
    assert parse_topic_types(specs) == {"clicks": ReportType.VISIT, "moves": ReportType.ACTIVITY}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["g:clicks:click"], "report type 'click' is not one of visit, activity"),
        (["g:clicks:visit:x"], "is not GROUP:TOPIC or GROUP:TOPIC:TYPE"),
        (["g:clicks:"], "report type '' is not one of"),
        (["g:clicks:visit", "g:clicks:activity"], "is given types 'visit' and 'activity'"),
    ],
)
def test_bad_report_types_are_one_clear_line(specs: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="--groups") as info:
        parse_groups(specs)
    assert message in str(info.value)


def test_headerless_records_are_checked_as_the_named_type() -> None:
    records = [FakeRecord("clicks", 0, i, 0, key, value, ()) for i, (key, value) in enumerate(make_records(1, 1))]
    assert len(PoisonCheck("clicks").check(records).poison) == len(records)  # the name says nothing
    result = PoisonCheck("clicks", ReportType.VISIT).check(records)
    assert not result.poison
    assert len(result.good) == len(records)
    # A visit is not an activity: the named type is enforced, not merely assumed.
    assert len(PoisonCheck("clicks", ReportType.ACTIVITY).check(records).poison) == len(records)
    # A record that carries the header is checked as what the header says.
    tagged = [r._replace(headers=((HEADER_TYPE, b"activity"),)) for r in records]
    assert len(PoisonCheck("clicks", ReportType.VISIT).check(tagged).poison) == len(records)


@pytest.mark.integration
def test_a_headerless_topic_of_any_name_lands(broker: str, record_dir: Path, tmp_path: Path) -> None:
    topic = f"legacy-{uuid.uuid4().hex[:10]}"
    records = make_records(3, 20)
    asyncio.run(ensure_topics(broker, [topic], 2, 1))
    asyncio.run(produce(broker, topic, records, headers=lambda i: []))  # as the Go web-service wrote them
    log = tmp_path / "sink.log"
    with SinkProcess(broker, [f"legacy-{topic}:{topic}:visit"], record_dir, log_path=log) as sink:
        sink.wait_ready()
        wait_for(lambda: checkpointed(record_dir, topic) >= len(records), 30, "the legacy records to land")
        assert sink.metric("footfall_sink_dlq_records_total") == 0
        assert sink.terminate() == 0
    assert compare([v for _, v in records], landed(record_dir, topic)) == (0, 0, 0), f"log={log}"
