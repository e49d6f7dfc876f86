"""Report schemas: the original client's JSON decodes; every kind of invalid report names its field."""

from __future__ import annotations

import contextlib
import uuid

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from footfall.reports import Activity, ReportType, Visit, decode_report, decode_reports, encode_report, report_key

UID = "8f0e3c52-5f4a-4f5e-9d3b-2b8f1f3c4d5e"
VISIT = {
    "dataVer": 1,
    "userId": UID,
    "algorithmType": 3,
    "enterTime": 1514764800000,
    "exitTime": 1514767200000,
    "poiId": 5577006791947779410,
    "latitude": 41.38,
    "longitude": 2.17,
}
ACTIVITY = {
    "dataVer": 1,
    "userId": UID,
    "activityType": 4,
    "startTime": 1514768400000,
    "endTime": 1514770200000,
    "startLatitude": 41.38,
    "startLongitude": 2.17,
    "endLatitude": 41.4,
    "endLongitude": 2.2,
}


def test_original_visit_round_trips_compactly() -> None:
    [visit] = decode_reports(ReportType.VISIT, orjson.dumps([VISIT]))
    assert isinstance(visit, Visit)
    assert visit.userId == uuid.UUID(UID) and visit.poiId == 5577006791947779410
    assert orjson.loads(encode_report(visit)) == VISIT
    assert report_key(visit) == (UID, 1514764800000)


def test_original_activity_round_trips() -> None:
    [activity] = decode_reports(ReportType.ACTIVITY, orjson.dumps([ACTIVITY]))
    assert isinstance(activity, Activity)
    assert orjson.loads(encode_report(activity)) == ACTIVITY
    assert decode_report(ReportType.ACTIVITY, encode_report(activity)) == activity


def test_unknown_fields_are_dropped() -> None:
    [visit] = decode_reports(ReportType.VISIT, orjson.dumps([{**VISIT, "extra": [1, 2], "nested": {"a": 1}}]))
    assert b"extra" not in encode_report(visit)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("poiId", "12", "Expected `int`, got `str` - at `$[0].poiId`"),
        ("poiId", 2**63, "at `$[0].poiId`"),
        ("latitude", 90.5, "at `$[0].latitude`"),
        ("longitude", -180.01, "at `$[0].longitude`"),
        ("userId", "not-a-uuid", "at `$[0].userId`"),
        ("enterTime", -1, "at `$[0].enterTime`"),
        ("enterTime", 1.5, "at `$[0].enterTime`"),
        ("dataVer", None, "at `$[0].dataVer`"),
        ("algorithmType", True, "at `$[0].algorithmType`"),
    ],
)
def test_invalid_visit_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message.replace("$", r"\$").replace("[", r"\[")):
        decode_reports(ReportType.VISIT, orjson.dumps([{**VISIT, field: value}]))


@pytest.mark.parametrize("field", sorted(VISIT))
def test_missing_field_is_named(field: str) -> None:
    body = orjson.dumps([{k: v for k, v in VISIT.items() if k != field}])
    with pytest.raises(msgspec.ValidationError, match=f"missing required field `{field}`"):
        decode_reports(ReportType.VISIT, body)


def test_exit_before_enter_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="exitTime must be >= enterTime"):
        decode_reports(ReportType.VISIT, orjson.dumps([{**VISIT, "exitTime": VISIT["enterTime"] - 1}]))


def test_end_before_start_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="endTime must be >= startTime"):
        decode_report(ReportType.ACTIVITY, orjson.dumps({**ACTIVITY, "endTime": 0}))


def test_nan_and_infinity_are_not_json() -> None:
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        body = orjson.dumps([VISIT]).replace(b"41.38", token)
        with pytest.raises(msgspec.DecodeError):
            decode_reports(ReportType.VISIT, body)


def test_malformed_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError, match=r"malformed|truncated|invalid"):
        decode_reports(ReportType.VISIT, b'[{"dataVer": 1,')


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError):  # any other exception fails the test
        decode_reports(ReportType.VISIT, data)


@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    enter=st.integers(0, 2**40),
    length=st.integers(0, 2**30),
    poi=st.integers(-(2**63), 2**63 - 1),
)
def test_every_valid_visit_round_trips(lat: float, lon: float, enter: int, length: int, poi: int) -> None:
    visit = Visit(
        dataVer=1,
        userId=uuid.UUID(UID),
        algorithmType=1,
        enterTime=enter,
        exitTime=enter + length,
        poiId=poi,
        latitude=lat,
        longitude=lon,
    )
    assert decode_report(ReportType.VISIT, encode_report(visit)) == visit
