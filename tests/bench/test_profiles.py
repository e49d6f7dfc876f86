"""The data profiles: the original client's distributions and timing, reproducibility, report keys."""

from __future__ import annotations

import datetime as dt
import gzip
import uuid
from collections import Counter

import msgspec
import pytest

from bench.identity import parse_user_id, run_user_id
from bench.profiles import OriginalProfile, encode_body, make_profile
from footfall.generator import ACTIVITY_TYPES, HOUR_MS, MINUTE_MS
from footfall.layout import MS_PER_DAY
from footfall.reports import Activity, ReportType, Visit, decode_reports

START = dt.date(2018, 1, 1)
START_MS = 1_514_764_800_000  # 2018-01-01T00:00:00Z


def test_original_visits_match_the_original_client() -> None:
    client = OriginalProfile(seed=1).client(0)
    for day in range(3):
        visits = client.reports(ReportType.VISIT, day)
        client.reports(ReportType.ACTIVITY, day)
        assert len(visits) == 12
        for i, v in enumerate(visits):
            assert isinstance(v, Visit)
            assert v.userId == client.user_id
            assert v.enterTime == START_MS + day * MS_PER_DAY + 2 * i * HOUR_MS  # 00:00, 02:00, … 22:00
            assert v.exitTime - v.enterTime == 40 * MINUTE_MS
            assert 1 <= v.algorithmType <= 7
            assert 0 <= v.poiId < 2**63
            assert -90 <= v.latitude <= 90 and -180 <= v.longitude <= 180


def test_original_activities_match_the_original_client() -> None:
    client = OriginalProfile(seed=1).client(0)
    client.reports(ReportType.VISIT, 0)
    activities = client.reports(ReportType.ACTIVITY, 0)
    assert len(activities) == 12
    for i, a in enumerate(activities):
        assert isinstance(a, Activity)
        assert a.startTime == START_MS + HOUR_MS + 2 * i * HOUR_MS  # 01:00, 03:00, … 23:00
        assert a.endTime - a.startTime == 30 * MINUTE_MS
        assert a.activityType in ACTIVITY_TYPES


def test_original_distributions_are_uniform() -> None:
    """Every algorithmType 1..7 and activityType in {1,2,4,8,16} shows up about equally; coordinates span the globe."""
    profile = OriginalProfile(seed=3)
    algorithms: Counter[int] = Counter()
    activities: Counter[int] = Counter()
    lats: list[float] = []
    for index in range(50):
        client = profile.client(index)
        for day in range(4):
            visits = client.reports(ReportType.VISIT, day)
            algorithms.update(v.algorithmType for v in visits)  # type: ignore[union-attr]
            lats.extend(v.latitude for v in visits)  # type: ignore[union-attr]
            activities.update(a.activityType for a in client.reports(ReportType.ACTIVITY, day))  # type: ignore[union-attr]
    assert set(algorithms) == set(range(1, 8))
    assert set(activities) == set(ACTIVITY_TYPES)
    n = sum(algorithms.values())  # 2400
    assert all(abs(c - n / 7) < n / 7 * 0.25 for c in algorithms.values()), algorithms
    assert all(abs(c - n / 5) < n / 5 * 0.25 for c in activities.values()), activities
    assert min(lats) < -80 and max(lats) > 80
    assert abs(sum(lats) / len(lats)) < 6  # uniform on [-90, 90]: mean ~ 0


def test_same_seed_same_data_different_seed_different_data() -> None:
    def day0(seed: int, index: int) -> bytes:
        client = OriginalProfile(seed=seed).client(index)
        return encode_body(client.reports(ReportType.VISIT, 0), gzip=False)

    assert day0(5, 0) == day0(5, 0)
    assert day0(5, 0) != day0(6, 0)
    assert day0(5, 0) != day0(5, 1)
    assert OriginalProfile(seed=5).client(3).user_id == OriginalProfile(seed=5).client(3).user_id


def test_report_times_are_the_generated_keys() -> None:
    profile = OriginalProfile(seed=9, start_date=dt.date(2020, 2, 28))
    client = profile.client(4)
    for day in range(3):
        for report_type in ReportType:
            reports = client.reports(report_type, day)
            assert [r.time_ms for r in reports] == list(profile.report_times(4, report_type, day))


def test_encoded_body_decodes_as_the_gateway_does() -> None:
    client = OriginalProfile(seed=2).client(0)
    visits = client.reports(ReportType.VISIT, 0)
    body = encode_body(visits, gzip=True)
    assert body[:2] == b"\x1f\x8b"
    assert decode_reports(ReportType.VISIT, gzip.decompress(body)) == visits
    assert msgspec.json.decode(encode_body(visits, gzip=False))[0]["enterTime"] == START_MS


def test_fast_path_is_byte_identical_to_the_core_generator() -> None:
    """The bench's hot path (``encoded``) draws exactly what footfall.generator draws."""
    for start in (dt.date(2018, 1, 1), dt.date(2021, 6, 30)):
        core, fast = OriginalProfile(seed=13, start_date=start), OriginalProfile(seed=13, start_date=start)
        for index in range(3):
            a, b = core.client(index), fast.client(index)
            for day in range(5):
                for report_type in ReportType:
                    raw, n = b.encoded(report_type, day)
                    assert raw == encode_body(a.reports(report_type, day), gzip=False)
                    assert n == 12


@pytest.mark.parametrize("name", ["original", "realistic"])
def test_run_ids_change_only_the_user_ids(name: str) -> None:
    """Same seed, two runs: the same reports byte for byte once the userIds are swapped back."""
    start = dt.date(2018, 1, 1)
    a, b = make_profile(name, 3, start, run_id=0xA11CE), make_profile(name, 3, start, run_id=0xB0B)
    seeded = make_profile(name, 3, start)
    for index in (0, 1, 17):
        ca, cb, cs = a.client(index), b.client(index), seeded.client(index)
        ce = make_profile(name, 3, start, run_id=0xA11CE).client(index)  # the same draws, as arrays
        assert ca.user_id != cb.user_id != cs.user_id
        assert parse_user_id(str(ca.user_id)) == (0xA11CE, index)
        assert parse_user_id(str(cb.user_id)) == (0xB0B, index)
        for day in range(3):
            for report_type in ReportType:
                la, lb, ls = ca.lines(report_type, day), cb.lines(report_type, day), cs.lines(report_type, day)
                assert la.replace(str(ca.user_id).encode(), str(cs.user_id).encode()) == ls
                assert lb.replace(str(cb.user_id).encode(), str(cs.user_id).encode()) == ls
                # lines() and encoded() are the same reports: the array's items, one per line.
                array, n = ce.encoded(report_type, day)
                assert array == b"[" + b",".join(la.splitlines()) + b"]" and n == len(la.splitlines())


def test_bench_user_ids_round_trip() -> None:
    assert parse_user_id(str(run_user_id(2**48 - 1, 2**32 - 1))) == (2**48 - 1, 2**32 - 1)
    uid = run_user_id(0x3F9A0C5E21B7, 123_456)
    assert str(uid).startswith("3f9a0c5e-21b7-4") and uid.version == 4
    assert parse_user_id(str(uuid.uuid4())) is None  # a random UUID is no bench userId (2^-42)
    assert parse_user_id("not a uuid") is None
