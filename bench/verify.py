"""End-to-end verification: did every acknowledged report land exactly once?

Inputs: the run file (``bench --json RUN.json``) and the sink's record directory
``<DIR>/<topic>/date=*/<topic>+<partition>+<offset>.jsonl`` (one report JSON per line).

A report is identified by content: (type, userId, enter/start time). The run file's ledger
says, per client and type, which days were acknowledged (2xx) and which attempts failed; the
profile regenerates those days' report times, so the expected set is never stored.

Counting, per expected report:

* acknowledged, found 0 times -> **lost**;
* acknowledged, found n > 1 times -> n - 1 **duplicated**, except that copies explained by
  failed attempts for the same (type, day) (a timed-out request the gateway did write, then
  resent) are counted as **redelivered**, not duplicated;
* only failed attempts, found -> **failed_present** (else **failed_absent**); reported, never
  an error, since the gateway may have written a request it did not acknowledge;

and every landed line no ledger entry explains (unknown user, time, or more copies than
attempts of a failed request) is **unexpected**; a line that is not a report is also counted
as **corrupt**. A last line without its newline (a segment the sink is still writing) is
ignored and counted as **partial**.

Speed: lines are decoded into a two-field Struct by msgspec (``decode_lines`` per file), and
each key becomes one int, counted with ``collections.Counter`` (C-speed).
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from bench.errors import RunFileError
from bench.ledger import ClientLedger
from bench.profiles import Profile, make_profile
from footfall.layout import check_topic, parse_segment_name
from footfall.reports import ReportType

__all__ = ["VerifyResult", "verify", "write_result"]

# A key packs (client, time offset) into one int: client * 2**_SHIFT + (time - base + 2**(_SHIFT-1)).
_SHIFT: Final = 46  # ±1100 years of milliseconds around the start date
_LIMIT: Final = 1 << _SHIFT


class _VisitKey(msgspec.Struct):
    userId: str
    time: int = msgspec.field(name="enterTime")


class _ActivityKey(msgspec.Struct):
    userId: str
    time: int = msgspec.field(name="startTime")


_BLOCK: Final = 8 << 20  # read segments in blocks of whole lines: memory stays flat for big files


def _line_blocks(path: Path, result: VerifyResult) -> Iterator[bytes]:
    """Blocks of complete lines of ``path``; a last line without newline counts as ``partial``."""
    rest = b""
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            block = rest + block
            end = block.rfind(b"\n") + 1
            rest = block[end:]
            if end:
                yield block[:end]
    if rest:
        result.partial += 1  # a segment still being written: its last line is incomplete


_LINE_DECODERS: Final[dict[ReportType, msgspec.json.Decoder[Any]]] = {
    ReportType.VISIT: msgspec.json.Decoder(_VisitKey),
    ReportType.ACTIVITY: msgspec.json.Decoder(_ActivityKey),
}


class VerifyResult(msgspec.Struct, kw_only=True):
    """Outcome of :func:`verify`. ``ok`` when nothing was lost, duplicated or unexpected."""

    acknowledged: int = 0  # reports the gateway acknowledged (expected exactly once)
    present: int = 0  # acknowledged reports found at least once
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    redelivered: int = 0  # extra copies explained by failed attempts (not an error)
    failed_present: int = 0  # reports of failed-only requests that landed anyway
    failed_absent: int = 0
    partial: int = 0  # half-written last lines ignored
    corrupt: int = 0  # lines that are not reports (also counted in unexpected)
    lines: int = 0  # complete lines read
    files: int = 0
    by_type: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    samples: dict[str, list[str]] = msgspec.field(default_factory=dict)  # a few examples per problem

    @property
    def ok(self) -> bool:
        """True when nothing was lost, duplicated or unexpected."""
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0

    def line(self) -> str:
        """``lost=… duplicated=… unexpected=… …`` (one line, for humans and scripts)."""
        return (
            f"lost={self.lost} duplicated={self.duplicated} unexpected={self.unexpected} partial={self.partial} "
            f"acknowledged={self.acknowledged} present={self.present} redelivered={self.redelivered} "
            f"failed_present={self.failed_present} failed_absent={self.failed_absent} corrupt={self.corrupt} "
            f"lines={self.lines} files={self.files}"
        )


_SAMPLES: Final = 5


def _sample(result: VerifyResult, problem: str, text: str) -> None:
    bucket = result.samples.setdefault(problem, [])
    if len(bucket) < _SAMPLES:
        bucket.append(text)


def _load_run(path: Path) -> dict[str, Any]:
    from bench.report import RUN_FORMAT

    try:
        content = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        raise RunFileError(f"run file {path} not found (write one with 'bench --json {path}')") from None
    except OSError as exc:
        raise RunFileError(f"cannot read run file {path}: {exc.strerror}") from exc
    except msgspec.DecodeError as exc:
        raise RunFileError(f"run file {path} is not JSON: {exc}") from exc
    if not isinstance(content, dict) or content.get("format") != RUN_FORMAT:
        raise RunFileError(f'{path} is not a bench run file (no "format": "{RUN_FORMAT}")')
    return content


def verify(
    run_json_path: str | Path,
    record_directory: str | Path,
    visit_topic: str = "visit",
    activity_topic: str = "activity",
) -> VerifyResult:
    """Check the record directory against the run file; see the module docstring.

    Raises:
        RunFileError: the run file is missing, unreadable or not a bench run file, or the
            record directory does not exist.
        ConfigError: a topic name is not a legal (path-safe) topic name.
    """
    run = _load_run(Path(run_json_path))
    if not Path(record_directory).is_dir():
        raise RunFileError(f"record directory {record_directory} does not exist (--record-directory)")
    topics = {ReportType.VISIT: check_topic(visit_topic), ReportType.ACTIVITY: check_topic(activity_topic)}
    try:
        start_date = dt.date.fromisoformat(run["start_date"])
        profile = make_profile(run["profile"], int(run["seed"]), start_date)
        ledgers = [ClientLedger.from_json(entry) for entry in run["ledger"]["clients"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFileError(f"run file {run_json_path} is malformed: {exc!r}") from exc
    base = int(dt.datetime(start_date.year, start_date.month, start_date.day, tzinfo=dt.UTC).timestamp()) * 1000
    base -= 1 << (_SHIFT - 1)
    clients = {ledger.user_id: ledger.client for ledger in ledgers}
    result = VerifyResult()
    root = Path(record_directory)
    for report_type in ReportType:
        # One type at a time, and no name kept on the counter: its memory goes before the next type's.
        _compare(
            result,
            report_type,
            _count_found(result, root, topics[report_type], report_type, clients, base),
            ledgers,
            profile,
            base,
        )
    return result


def _count_found(
    result: VerifyResult,
    root: Path,
    topic: str,
    report_type: ReportType,
    clients: dict[str, int],
    base: int,
) -> collections.Counter[int]:
    """Count each landed report's key; unknown users go straight to ``unexpected``."""
    found: collections.Counter[int] = collections.Counter()
    decoder = _LINE_DECODERS[report_type]
    time_field = "enterTime" if report_type is ReportType.VISIT else "startTime"
    for path in sorted(root.glob(f"{topic}/date=*/*.jsonl")):
        if parse_segment_name(path.name) is None:
            continue
        result.files += 1
        for data in _line_blocks(path, result):
            try:
                records = decoder.decode_lines(data)
            except msgspec.DecodeError:
                records = _decode_tolerant(result, decoder, data, path)
            result.lines += data.count(b"\n")
            keys: list[int] = []
            append = keys.append
            for record in records:
                client = clients.get(record.userId)
                offset = record.time - base
                if client is None or not 0 <= offset < _LIMIT:  # an absurd time would alias another client's keys
                    result.unexpected += 1
                    _sample(result, "unexpected", f"{report_type} userId={record.userId} {time_field}={record.time}")
                    continue
                append((client << _SHIFT) + offset)
            found.update(keys)
    return found


def _decode_tolerant(result: VerifyResult, decoder: msgspec.json.Decoder[Any], data: bytes, path: Path) -> list[Any]:
    """Line-by-line fallback when a file has a line that is not a report."""
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            out.append(decoder.decode(line))
        except msgspec.DecodeError:
            result.corrupt += 1
            result.unexpected += 1
            _sample(result, "corrupt", f"{path.name}:{number}")
    return out


def _compare(
    result: VerifyResult,
    report_type: ReportType,
    found: collections.Counter[int],
    ledgers: list[ClientLedger],
    profile: Profile,
    base: int,
) -> None:
    """Walk the expected keys, take them out of ``found``; what remains is unexpected."""
    stats = collections.Counter[str]()
    pop = found.pop
    for ledger in ledgers:
        prefix = ledger.client << _SHIFT
        acked = ledger.acked[report_type]
        failed = ledger.failed[report_type]
        for day in acked:
            extra_ok = failed.get(day, 0)  # copies a failed attempt of this day may have left
            for t in profile.report_times(ledger.client, report_type, day):
                n = pop(prefix + t - base, 0)
                stats["acknowledged"] += 1
                if n == 0:
                    stats["lost"] += 1
                    _sample(result, "lost", f"{report_type} userId={ledger.user_id} time={t} day={day}")
                    continue
                stats["present"] += 1
                extra = n - 1
                redelivered = min(extra, extra_ok)
                stats["redelivered"] += redelivered
                if extra > redelivered:
                    stats["duplicated"] += extra - redelivered
                    _sample(result, "duplicated", f"{report_type} userId={ledger.user_id} time={t} x{n}")
        for day, attempts in failed.items():
            if day in acked:
                continue
            for t in profile.report_times(ledger.client, report_type, day):
                n = pop(prefix + t - base, 0)
                if n == 0:
                    stats["failed_absent"] += 1
                    continue
                stats["failed_present"] += 1
                if n > attempts:
                    stats["unexpected"] += n - attempts
    leftover = sum(found.values())
    stats["unexpected"] += leftover
    for key in list(found)[:_SAMPLES]:
        _sample(result, "unexpected", f"{report_type} client={key >> _SHIFT} time={(key & ((1 << _SHIFT) - 1)) + base}")
    for name, n in stats.items():
        setattr(result, name, getattr(result, name) + n)
    result.by_type[str(report_type)] = dict(stats)


def write_result(path: str, result: VerifyResult) -> None:
    """Write ``result`` as JSON (with ``ok``)."""
    content = msgspec.to_builtins(result)
    content["ok"] = result.ok
    Path(path).write_bytes(msgspec.json.encode(content))
