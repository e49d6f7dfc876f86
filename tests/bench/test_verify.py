"""End-to-end verification against a fixture record directory written by a fake gateway."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench.errors import RunFileError
from bench.verify import LINE_COUNTERS, verify
from footfall.layout import segment_files
from tests.bench.conftest import run_bench
from tests.bench.fake_gateway import FakeGateway


def segments(records: Path, topic: str) -> list[Path]:
    return sorted(path for path, _ in segment_files(records, topic))


@pytest.fixture
async def landed(tmp_path: Path, gateway: FakeGateway) -> tuple[Path, Path]:
    """A clean run: 3 clients x 10 requests, every report landed once. Returns (run file, records)."""
    run_file = tmp_path / "run.json"
    await run_bench(gateway.url, run_file, concurrent_clients=3, requests=30)
    return run_file, tmp_path / "records"


def test_clean_run_verifies(landed: tuple[Path, Path]) -> None:
    result = verify(*landed)
    assert result.ok, result.line()
    assert (result.acknowledged, result.present, result.lines) == (360, 360, 360)
    assert result.files == len(list(segment_files(landed[1]))) >= 2  # one per partition written
    assert result.line().startswith("lost=0 duplicated=0 unexpected=0 partial=0 ")


def test_deleted_record_is_lost(landed: tuple[Path, Path]) -> None:
    run_file, records = landed
    path = segments(records, "visit")[0]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5] + lines[6:]))
    result = verify(run_file, records)
    assert (result.lost, result.duplicated, result.unexpected) == (1, 0, 0)
    assert not result.ok
    assert "visit userId=" in result.samples["lost"][0]


def test_duplicated_record(landed: tuple[Path, Path]) -> None:
    run_file, records = landed
    path = segments(records, "activity")[0]
    lines = path.read_bytes().splitlines(keepends=True)
    # The copy lands in a later segment of the same partition (as after a sink replay).
    partition = path.name.split("+")[1]
    (path.parent / f"activity+{partition}+{10**6:020d}.jsonl").write_bytes(lines[7])
    result = verify(run_file, records)
    assert (result.lost, result.duplicated, result.unexpected) == (0, 1, 0)


def test_unexpected_records(landed: tuple[Path, Path]) -> None:
    run_file, records = landed
    path = segments(records, "visit")[0]
    first = msgspec.json.decode(path.read_bytes().splitlines()[0])
    unknown_user = dict(first, userId="00000000-0000-4000-8000-000000000000")
    unknown_day = dict(first, enterTime=first["enterTime"] + 1000 * 86_400_000)
    with path.open("ab") as f:
        f.write(msgspec.json.encode(unknown_user) + b"\n")
        f.write(msgspec.json.encode(unknown_day) + b"\n")
        f.write(b"not json\n")
    result = verify(run_file, records)
    # The unknown user is unexpected, the line that is not JSON corrupt (once: not also
    # unexpected); this run's user on a day it never sent is an altered report.
    assert (result.lost, result.duplicated, result.unexpected, result.altered, result.corrupt) == (0, 0, 1, 1, 1)
    assert sum(getattr(result, name) for name in LINE_COUNTERS) == result.lines, result.line()


def test_a_garbage_line_is_counted_once_and_fails_the_run(landed: tuple[Path, Path]) -> None:
    run_file, records = landed
    clean = verify(run_file, records)
    with segments(records, "visit")[0].open("ab") as f:
        f.write(b"\x00\x00garbage\n")
    result = verify(run_file, records)
    assert (result.corrupt, result.unexpected, result.lines) == (1, 0, clean.lines + 1), result.line()
    assert sum(getattr(result, name) for name in LINE_COUNTERS) == result.lines, result.line()
    assert not result.ok
    assert "garbage" in result.samples["corrupt"][0]


def test_half_written_last_line_is_partial_not_an_error(landed: tuple[Path, Path]) -> None:
    run_file, records = landed
    path = segments(records, "visit")[0]
    with path.open("ab") as f:
        f.write(b'{"dataVer":1,"userId":"8f0e')
    result = verify(run_file, records)
    assert result.ok and result.partial == 1, result.line()


def test_other_files_are_ignored(landed: tuple[Path, Path]) -> None:
    run_file, records = landed
    (records / "_footfall").mkdir(exist_ok=True)
    (records / "_footfall" / "visit+0.checkpoint").write_text("{}")
    (segments(records, "visit")[0].parent / "notes.txt").write_text("x")
    assert verify(run_file, records).ok


async def test_failed_requests_are_reported_separately(tmp_path: Path) -> None:
    """Every 4th request gets 503; half of those the gateway wrote anyway. None of them is lost."""

    def fail(n: int, _t: object) -> tuple[int, bool] | None:
        if n % 4:
            return None
        return (503, n % 8 == 0)  # n = 8, 16, …: written but not acknowledged

    run_file = tmp_path / "run.json"
    with FakeGateway(record_directory=tmp_path / "records", fail=fail) as gw:
        _result, content = await run_bench(
            gw.url, run_file, concurrent_clients=2, requests=40, max_error_rate=1.0, report_interval=0.0
        )
    assert content["counts"]["failed"] == 10
    outcome = verify(run_file, tmp_path / "records")
    assert outcome.ok, outcome.line()
    # 10 failed attempts, 5 written anyway. In closed mode a failed day is resent, so a written
    # one shows up as a redelivered copy, not a duplicate — unless the budget ran out before
    # the resend (then it is failed_present).
    assert outcome.redelivered + outcome.failed_present == 5 * 12
    assert outcome.redelivered >= 4 * 12
    assert outcome.lost == outcome.duplicated == 0


async def test_failed_and_never_acknowledged(tmp_path: Path) -> None:
    """In the open model a failed request is not resent: verify counts it as failed, present or absent."""

    def fail(n: int, _t: object) -> tuple[int, bool] | None:
        return None if n % 5 else (503, n % 10 == 0)

    run_file = tmp_path / "run.json"
    with FakeGateway(record_directory=tmp_path / "records", fail=fail) as gw:
        await run_bench(gw.url, run_file, concurrent_clients=2, rate=400, requests=40, max_error_rate=1.0)
    outcome = verify(run_file, tmp_path / "records")
    assert outcome.ok, outcome.line()
    assert outcome.acknowledged == 32 * 12
    assert outcome.failed_present == 4 * 12 and outcome.failed_absent == 4 * 12


def test_bad_run_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="not found"):
        verify(tmp_path / "missing.json", tmp_path)
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(RunFileError, match="not a bench run file"):
        verify(tmp_path / "x.json", tmp_path)


def test_a_malformed_run_file_is_said_in_words(landed: tuple[Path, Path], tmp_path: Path) -> None:
    run_file, records = landed
    content = msgspec.json.decode(run_file.read_bytes())
    del content["seed"]
    edited = tmp_path / "edited.json"
    edited.write_bytes(msgspec.json.encode(content))
    with pytest.raises(RunFileError) as info:
        verify(edited, records)
    assert str(info.value) == f"run file {edited} is malformed: no 'seed' field"
