"""``bench verify`` as an oracle: every fault class injected into a landed directory, counts asserted.

The directory is landed for real: the bench runs against the fake gateway, which files each
report as the pipeline does (the gateway's re-encoded value, the murmur2 partition of its
userId, the date of receipt, the sink's own PartitionWriter and checkpoints). Each test copies
it, injects one fault and asserts exactly what verify counts — and that every line is still
counted in exactly one line counter.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from bench.client import KIND_CANCELLED, KIND_CONNECT, KIND_HTTP, KIND_TIMEOUT, Outcome
from bench.errors import RunFileError
from bench.identity import parse_user_id
from bench.verify import ERROR_COUNTERS, LINE_COUNTERS, VerifyResult, verify
from footfall.kafka import partition_for
from footfall.layout import parse_segment_name, segment_files, segment_name
from tests.bench.conftest import run_bench
from tests.bench.fake_gateway import FakeGateway

PARTITIONS = 3
CLIENTS = 4
REQUESTS = 48  # 4 clients x 6 days x 2 types, 12 reports each: 576 reports
REPORTS = REQUESTS * 12


class Landed(NamedTuple):
    run_file: Path
    records: Path


def accounted(result: VerifyResult) -> VerifyResult:
    """``result`` after checking that the line counters partition the lines."""
    assert sum(getattr(result, name) for name in LINE_COUNTERS) == result.lines, result.line()
    return result


def errors(result: VerifyResult) -> dict[str, int]:
    """The error counters that are not zero."""
    return {name: getattr(result, name) for name in ERROR_COUNTERS if getattr(result, name)}


def segments(records: Path, topic: str = "visit") -> list[Path]:
    return sorted(path for path, _ in segment_files(records, topic))


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def decode(line: bytes) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.json.decode(line)
    return out


def encode(report: dict[str, Any]) -> bytes:
    return msgspec.json.encode(report) + b"\n"


def land(tmp: Path, *, run_id: int | None = None, **overrides: Any) -> Landed:
    records = tmp / "records"
    fail = overrides.pop("fail", None)
    options = {"concurrent_clients": CLIENTS, "requests": REQUESTS, **overrides}
    with FakeGateway(record_directory=records, partitions=PARTITIONS, fail=fail) as gw:
        asyncio.run(run_bench(gw.url, tmp / "run.json", run_id=run_id, **options))
    return Landed(tmp / "run.json", records)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Landed:
    return land(tmp_path_factory.mktemp("landed"))


@pytest.fixture
def landed(pristine: Landed, tmp_path: Path) -> Iterator[Landed]:
    """A private copy of the landed run (clean: checked here) for one fault."""
    records = tmp_path / "records"
    shutil.copytree(pristine.records, records)
    result = accounted(verify(pristine.run_file, records))
    assert result.ok and result.present == result.acknowledged == result.lines == REPORTS, result.line()
    yield Landed(pristine.run_file, records)


def busiest_segment(records: Path, topic: str = "visit") -> Path:
    return max(segments(records, topic), key=lambda p: p.stat().st_size)


# -- content --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("latitude", 1.5), ("poiId", 42), ("exitTime", None)])
def test_an_altered_field_is_caught(landed: Landed, field: str, value: object) -> None:
    path = busiest_segment(landed.records)
    lines = read_lines(path)
    report = decode(lines[3])
    report[field] = report["enterTime"] + 1 if value is None else value
    lines[3] = encode(report)
    path.write_bytes(b"".join(lines))
    result = accounted(verify(*landed))
    assert errors(result) == {"altered": 1, "lost": 1}, result.line()
    assert report["userId"] in result.samples["altered"][0]


def test_garbage_around_the_key_is_caught(landed: Landed) -> None:
    path = busiest_segment(landed.records)
    lines = read_lines(path)
    report = decode(lines[0])
    lines[0] = encode({"userId": report["userId"], "enterTime": report["enterTime"], "junk": "x" * 20})
    path.write_bytes(b"".join(lines))
    assert errors(accounted(verify(*landed))) == {"altered": 1, "lost": 1}


def test_contents_swapped_between_reports_of_one_user(landed: Landed) -> None:
    """Everything but userId and time swapped between two reports of the same user."""
    path = busiest_segment(landed.records)
    lines = read_lines(path)
    a, b = decode(lines[0]), decode(lines[1])
    assert a["userId"] == b["userId"]
    keep = ("userId", "enterTime")
    lines[0] = encode({k: (a[k] if k in keep else b[k]) for k in a})
    lines[1] = encode({k: (b[k] if k in keep else a[k]) for k in b})
    path.write_bytes(b"".join(lines))
    assert errors(accounted(verify(*landed))) == {"altered": 2, "lost": 2}


def test_user_ids_swapped_between_reports_with_equal_times(landed: Landed) -> None:
    """Original profile: every user has a visit at each even hour, so equal times are common."""
    by_time: dict[int, list[tuple[Path, int, dict[str, Any]]]] = {}
    for path in segments(landed.records):
        for number, line in enumerate(read_lines(path)):
            report = decode(line)
            by_time.setdefault(report["enterTime"], []).append((path, number, report))
    (path_a, n_a, a), (path_b, n_b, b) = next(
        pair[:2] for pair in by_time.values() if len({r["userId"] for _, _, r in pair}) > 1
    )
    assert a["enterTime"] == b["enterTime"] and a["userId"] != b["userId"]
    a["userId"], b["userId"] = b["userId"], a["userId"]
    for path, number, report in ((path_a, n_a, a), (path_b, n_b, b)):
        lines = read_lines(path)
        lines[number] = encode(report)
        path.write_bytes(b"".join(lines))
    assert errors(accounted(verify(*landed))) == {"altered": 2, "lost": 2}


def test_a_report_of_the_other_type_is_misplaced(landed: Landed) -> None:
    activity = busiest_segment(landed.records, "activity")
    moved = read_lines(activity)[0]
    activity.write_bytes(b"".join(read_lines(activity)[1:]))
    visit = busiest_segment(landed.records)
    visit.write_bytes(visit.read_bytes() + moved)
    assert errors(accounted(verify(*landed))) == {"misplaced": 1, "lost": 1}


# -- place and order ------------------------------------------------------------------------------


def test_a_line_moved_to_another_partition(landed: Landed) -> None:
    source = busiest_segment(landed.records)
    name = parse_segment_name(source.name)
    assert name is not None
    lines = read_lines(source)
    user = decode(lines[5])["userId"]
    assert partition_for(user.encode(), PARTITIONS) == name.partition  # the fixture landed it right
    other = (name.partition + 1) % PARTITIONS
    target = source.parent / segment_name("visit", other, 10**6)
    target.write_bytes(lines[5])
    source.write_bytes(b"".join(lines[:5] + lines[6:]))
    result = accounted(verify(*landed))
    assert errors(result) == {"misplaced": 1, "lost": 1}, result.line()
    assert result.partitions == {"visit": PARTITIONS, "activity": PARTITIONS}


def test_lines_reordered_within_a_file(landed: Landed) -> None:
    path = busiest_segment(landed.records)
    lines = read_lines(path)
    assert decode(lines[2])["userId"] == decode(lines[3])["userId"]
    lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))
    result = accounted(verify(*landed))
    assert errors(result) == {"out_of_order": 1}, result.line()
    assert result.present == REPORTS  # every report is there, one came too early


def test_requests_reordered_across_files_of_a_partition(landed: Landed) -> None:
    """A user's day 1 before its day 0 (closed loop: day 1 was sent after day 0's ack)."""
    path = busiest_segment(landed.records)
    lines = read_lines(path)
    user = decode(lines[0])["userId"]
    mine = [n for n, line in enumerate(lines) if decode(line)["userId"] == user]
    first_request, second_request = mine[:12], mine[12:24]
    assert len(second_request) == 12
    order = second_request + first_request
    rest = [n for n in range(len(lines)) if n not in set(order)]
    path.write_bytes(b"".join(lines[n] for n in order + rest))
    result = accounted(verify(*landed))
    assert errors(result) == {"out_of_order": 12}, result.line()


def test_file_moved_to_another_date_folder(landed: Landed) -> None:
    path = busiest_segment(landed.records)
    count = len(read_lines(path))
    elsewhere = landed.records / "visit" / "date=2018-01-01"
    elsewhere.mkdir()
    path.rename(elsewhere / path.name)
    result = accounted(verify(*landed))
    assert errors(result) == {"misplaced": count, "lost": count}, result.line()


def test_order_follows_generations_not_start_offsets(landed: Landed) -> None:
    """A log that starts over (generation 1) continues after generation 0 whatever its offsets."""
    path = busiest_segment(landed.records)
    name = parse_segment_name(path.name)
    assert name is not None
    lines = read_lines(path)
    half = len(lines) // 2
    path.unlink()
    # Generation 0 holds offsets from 100 on, generation 1 starts again at 0: clean.
    (path.parent / segment_name("visit", name.partition, 100)).write_bytes(b"".join(lines[:half]))
    gen1 = path.parent / segment_name("visit", name.partition, 0, generation=1)
    gen1.write_bytes(b"".join(lines[half:]))
    assert accounted(verify(*landed)).ok
    # The halves the other way round: the later reports now come first in log order.
    (path.parent / segment_name("visit", name.partition, 100)).write_bytes(b"".join(lines[half:]))
    gen1.write_bytes(b"".join(lines[:half]))
    result = accounted(verify(*landed))
    assert result.out_of_order > 0 and set(errors(result)) == {"out_of_order"}, result.line()


# -- copies ---------------------------------------------------------------------------------------


def test_injected_copies_are_duplicates(landed: Landed) -> None:
    path = busiest_segment(landed.records)
    lines = read_lines(path)
    path.write_bytes(b"".join(lines) + lines[4] * 10)
    result = accounted(verify(*landed))
    assert errors(result) == {"duplicated": 10}, result.line()


def test_refused_attempts_excuse_no_copies(tmp_path: Path) -> None:
    """One client: its 2nd request (activities of day 0) is refused 11 times (503 saturated:
    nothing produced) before its ack; 10 extra copies of one of its reports are duplicates."""

    def fail(n: int, _t: object) -> tuple[int, bool, str] | None:
        return (503, False, "saturated") if 2 <= n <= 12 else None

    run_file, records = land(tmp_path, fail=fail, retries=20, concurrent_clients=1, requests=12)
    content = msgspec.json.decode(run_file.read_bytes())
    assert content["ledger"]["clients"][0]["failed"]["activity"] == [[0, 11, 0]]  # [day, attempts, maybe written]
    assert accounted(verify(run_file, records)).ok
    path = segments(records, "activity")[0]
    first_of_day_0 = min(read_lines(path), key=lambda line: decode(line)["startTime"])
    path.write_bytes(path.read_bytes() + first_of_day_0 * 10)
    result = accounted(verify(run_file, records))
    assert errors(result) == {"duplicated": 10}, result.line()
    assert result.redelivered == 0


def test_maybe_written_attempts_excuse_one_copy_each(tmp_path: Path) -> None:
    """One client: its 3rd request (visits of day 1) times out at the gateway once after producing
    (503 produce_timeout, written): those reports may land twice; a third copy is a duplicate."""

    def fail(n: int, _t: object) -> tuple[int, bool, str] | None:
        return (503, True, "produce_timeout") if n == 3 else None

    run_file, records = land(tmp_path, fail=fail, concurrent_clients=1, requests=12)
    content = msgspec.json.decode(run_file.read_bytes())
    assert content["ledger"]["clients"][0]["failed"]["visit"] == [[1, 1, 1]]
    result = accounted(verify(run_file, records))
    assert result.ok and result.redelivered == 12 and result.duplicated == 0, result.line()
    path = segments(records, "visit")[0]
    lines = read_lines(path)
    twice = next(line for line in lines if lines.count(line) == 2)
    path.write_bytes(path.read_bytes() + twice)
    result = accounted(verify(run_file, records))
    assert errors(result) == {"duplicated": 1}, result.line()
    # Another report of the day that was acknowledged at once gets no such allowance.
    once = next(line for line in lines if lines.count(line) == 1)
    path.write_bytes(path.read_bytes() + once)
    assert errors(accounted(verify(run_file, records))) == {"duplicated": 2}


# -- runs sharing a directory ---------------------------------------------------------------------


def test_same_seed_again_with_nothing_landed_is_lost(tmp_path: Path, pristine: Landed) -> None:
    """Run 2, same seed, sink stopped: run 1's landed reports are foreign, all of run 2's lost."""
    records = tmp_path / "records"
    shutil.copytree(pristine.records, records)
    with FakeGateway(record_directory=None) as gw:  # acknowledges, lands nothing
        asyncio.run(run_bench(gw.url, tmp_path / "run2.json", concurrent_clients=CLIENTS, requests=REQUESTS))
    result = accounted(verify(tmp_path / "run2.json", records))
    assert errors(result) == {"lost": REPORTS}, result.line()
    assert result.foreign == REPORTS and result.present == 0
    # Run 1 still verifies clean: nothing of run 2 landed.
    assert accounted(verify(pristine.run_file, records)).ok


def test_two_runs_on_one_directory_verify_clean(tmp_path: Path) -> None:
    """``footfall up`` twice with one seed on one record directory: two clean verifies."""
    first = land(tmp_path)
    shutil.move(first.run_file, tmp_path / "run1.json")
    second = land(tmp_path)  # same seed (7), same directory, a new run id
    one, two = (accounted(verify(f, second.records)) for f in (tmp_path / "run1.json", second.run_file))
    assert one.ok and two.ok, (one.line(), two.line())
    assert one.present == two.present == one.foreign == two.foreign == REPORTS
    assert one.run_id != two.run_id
    # The same data under other userIds: only the userIds tell the runs apart.
    assert one.lines == two.lines == 2 * REPORTS


def test_unknown_user_ids_are_unexpected_not_foreign(landed: Landed) -> None:
    path = busiest_segment(landed.records)
    report = decode(read_lines(path)[0])
    run_hex = report["userId"][:8]
    stranger = dict(report, userId="00000000-0000-4000-8000-000000000000")
    # A run id of another run but a tag that does not match: not a bench userId.
    forged = dict(report, userId=f"{(int(run_hex, 16) ^ 1):08x}" + report["userId"][8:])
    assert parse_user_id(forged["userId"]) is None
    path.write_bytes(path.read_bytes() + encode(stranger) + encode(forged) + b"{not json\n")
    result = accounted(verify(*landed))
    assert errors(result) == {"unexpected": 2, "corrupt": 1}, result.line()
    assert result.corrupt == 1 and result.foreign == 0


# -- what the bench records -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "maybe"),
    [
        (Outcome(KIND_HTTP, 503, 1.0, "saturated"), False),
        (Outcome(KIND_HTTP, 503, 1.0, "broker_unreachable"), False),
        (Outcome(KIND_HTTP, 400, None, "invalid_reports"), False),
        (Outcome(KIND_CONNECT), False),
        (Outcome(KIND_HTTP, 503, 1.0, "produce_timeout"), True),
        (Outcome(KIND_HTTP, 503, 1.0, "unavailable"), True),
        (Outcome(KIND_HTTP, 500, None, "internal_error"), True),
        (Outcome(KIND_HTTP, 503), True),
        (Outcome(KIND_TIMEOUT), True),
        (Outcome(KIND_CANCELLED), True),
    ],
)
def test_which_failed_attempts_may_have_landed(outcome: Outcome, maybe: bool) -> None:
    assert outcome.maybe_written is maybe


def test_partition_count_given_overrides_the_checkpoints(landed: Landed) -> None:
    assert accounted(verify(*landed, partitions=PARTITIONS)).ok
    wrong = accounted(verify(*landed, partitions=PARTITIONS + 1))  # keys map elsewhere under 4
    assert wrong.misplaced > 0 and wrong.lost == wrong.misplaced, wrong.line()


def test_run_file_of_the_old_format_is_refused(landed: Landed, tmp_path: Path) -> None:
    content = msgspec.json.decode(landed.run_file.read_bytes())
    content["version"] = 1
    old = tmp_path / "old.json"
    old.write_bytes(msgspec.json.encode(content))
    with pytest.raises(RunFileError, match=r"version 1 run file.*run the bench again"):
        verify(old, landed.records)


def test_a_client_missing_from_the_run_file_is_unexpected(landed: Landed, tmp_path: Path) -> None:
    """A lost worker's clients: this run's userIds, but no ledger entry says what they sent."""
    content = msgspec.json.decode(landed.run_file.read_bytes())
    gone = content["ledger"]["clients"].pop(1)
    partial = tmp_path / "partial.json"
    partial.write_bytes(msgspec.json.encode(content))
    result = accounted(verify(partial, landed.records))
    assert errors(result) == {"unexpected": REPORTS // CLIENTS}, result.line()
    assert gone["userId"] in result.samples["unexpected"][0]
    assert "missing from the run file" in result.samples["unexpected"][0]
