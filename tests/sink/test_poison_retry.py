"""The poison check and the retry lander's decision, without a broker."""

from __future__ import annotations

import random

import pytest

from footfall.generator import DEFAULT_START_DATE, day_start_ms, original_activities, original_visits, user_id
from footfall.reports import encode_report
from sink.checkpoint import Checkpoint
from sink.poison import PoisonCheck, type_of_topic
from sink.retry import lander_decision
from tests.sink.support import FakeRecord


def _records(kind: str = "visit", n: int = 24) -> list[FakeRecord]:
    rng = random.Random(3)
    uid = user_id(rng)
    day = day_start_ms(DEFAULT_START_DATE, 0)
    reports = (original_visits if kind == "visit" else original_activities)(rng, uid, day) * (n // 12)
    return [
        FakeRecord("t", 0, i, day, b"k", encode_report(r), (("ff-type", kind.encode()), ("ff-schema", b"1")))
        for i, r in enumerate(reports)
    ]


def test_fast_path_returns_joined_lines() -> None:
    records = _records()
    result = PoisonCheck("anything").check(records)
    assert result.good == records and not result.poison
    assert result.lines == b"".join(r.value + b"\n" for r in records)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("value", "headers", "error"),
    [
        (b"not json", None, "invalid visit report"),
        (b'{"dataVer":1}', None, "invalid visit report"),
        (b'{"a":\n1}', None, "newline"),
        (None, None, "tombstone"),
        (b"", None, "invalid visit report"),
        (b"VALID", (("ff-type", b"bogus"),), "unknown ff-type header"),
        (b"VALID", (), "no ff-type header"),
        (b"VALID", (("ff-type", b"activity"),), "invalid activity report"),
    ],
)
def test_poison_is_found_and_named(
    value: bytes | None, headers: tuple[tuple[str, bytes], ...] | None, error: str
) -> None:
    records = _records()
    bad = records[5]._replace(
        value=records[5].value if value == b"VALID" else value,
        headers=records[5].headers if headers is None else headers,
    )
    batch = [*records[:5], bad, *records[6:]]
    result = PoisonCheck("t").check(batch)
    assert [r.offset for r, _ in result.poison] == [5]
    assert error in result.poison[0][1]
    assert [r.offset for r in result.good] == [r.offset for r in batch if r.offset != 5]
    assert result.lines is None


def test_two_reports_in_one_value_is_poison() -> None:
    records = _records()
    doubled = records[0]._replace(value=records[0].value + b"," + records[1].value)  # type: ignore[operator]
    result = PoisonCheck("t").check([doubled, *records[1:]])
    assert [r.offset for r, _ in result.poison] == [0]


def test_values_valid_only_when_joined_are_poison() -> None:
    """Why values are not decoded as one JSON array ``[v1,v2,...]`` with a count check.

    Every crafted value starts with ``{``, ends with ``}`` and has no newline; joined with
    commas they decode as a list of exactly as many valid visits as there are values (a
    string spanning two values merges them, a value holding two objects splits), yet
    none of them is one report on its own. Per-value decoding rejects all three.
    """
    import msgspec

    from footfall.reports import Visit

    records = _records(n=12)
    one, two = records[0].value, records[1].value
    assert one is not None and two is not None
    opener = one[:-1] + b',"pad":"}'  # an unterminated string swallows the separator...
    closer = b'{","more":1}'  # ...and the start of the next value
    split = one + b"," + two  # two objects in one value
    crafted = [records[2]._replace(value=v) for v in (opener, closer, split)]
    values = [r.value for r in crafted]
    assert all(v.startswith(b"{") and v.endswith(b"}") and b"\n" not in v for v in values)  # type: ignore[union-attr]
    joined = msgspec.json.Decoder(list[Visit]).decode(b"[" + b",".join(values) + b"]")  # type: ignore[arg-type]
    assert len(joined) == len(values)  # the unsound fast path would accept the batch
    result = PoisonCheck("t").check([*records[:2], *crafted])
    assert len(result.poison) == 3 and len(result.good) == 2


def test_type_from_topic_name_without_header() -> None:
    assert type_of_topic("visit") == "visit"
    assert type_of_topic("activity.retry") == "activity"
    assert type_of_topic("other") is None
    records = [r._replace(headers=()) for r in _records("activity")]
    assert not PoisonCheck("activity").check(records).poison
    assert len(PoisonCheck("visit").check(records).poison) == len(records)


def test_mixed_types_in_one_batch() -> None:
    records = _records("visit", 12) + [r._replace(offset=r.offset + 12) for r in _records("activity", 12)]
    result = PoisonCheck("t").check(records)
    assert not result.poison and len(result.good) == 24


def test_lander_decision() -> None:
    source = Checkpoint(offset=100, parked=[(10, 20), (30, 30)])
    assert lander_decision(15, source, []) == "land"
    assert lander_decision(30, source, []) == "land"
    assert lander_decision(15, source, [(15, 15)]) == "skip"  # parked twice: landed once
    assert lander_decision(25, source, []) == "skip"  # source landed it directly after all
    assert lander_decision(101, source, []) == "wait"  # source has not decided yet
    assert lander_decision(5, None, []) == "wait"
