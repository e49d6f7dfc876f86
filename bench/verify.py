"""End-to-end verification: did every report the bench sent land exactly as the gateway answered?

(Over 400 lines on purpose: 60 are the counting contract below, and the scan, its per-line
classification and the settling of the counts share one set of per-report arrays and one hot
loop; what was sent is regenerated apart, in :mod:`bench.expected`.)

Inputs: the run file (``bench --json RUN.json``) and the sink's record directory
``<DIR>/<topic>/date=*/<topic>+<partition>+[g<generation>+]<offset>.jsonl`` (one report per line).

What verify knows. Every report the bench sent is a pure function of (profile, seed, run id,
client, day, type), and the run file's ledger says which (client, type, day) requests were
acknowledged (2xx) and how many attempts of each failed, and of those how many the gateway
may have written. So verify regenerates the exact bytes the gateway lands for each report
(its compact re-encoding, one line) and knows, per report: how many copies may land, the
partition its key maps to (murmur2 of the userId, as the producer), and its place in its
user's order. The run id (:mod:`bench.identity`) is in every userId: another run's reports,
even with the same seed, are never taken for this run's.

Where a line may be. The sink files a record under the UTC date of its Kafka timestamp, which
the gateway sets to the time it received the request: a line of this run is in a ``date=``
folder of the run's wall-clock span (``started_at`` .. ``+elapsed_s``, ± 15 min of clock skew).
A partition's files are its log in (generation, start offset) order; a ``<topic>.retry``
partition's files are a log of their own (records parked and landed again), holding source
partition ``p`` in retry partition ``p % retry partitions``. The number of partitions is
``--partitions`` or else read from the sink's checkpoints (``_footfall/checkpoints/<topic>/``,
one per partition it was ever assigned) and the segment names.

Each complete line is counted in exactly one of these (they sum to ``lines``):

* **present** — the first copy of an acknowledged report, in place (byte-identical, right
  topic, partition and date folder); an acknowledged report without one is **lost**;
* **failed_present** — the first copy of a report whose request only failed (the gateway may
  have written it); one without any copy is counted in **failed_absent** (reports, not lines);
* **redelivered** — a further copy that a failed, maybe-written attempt of the *same request*
  explains (a request acknowledged after k such attempts may land 1 + k times);
* **duplicated** — a copy beyond that (attempts the gateway refused before producing, a 4xx or
  a 503 ``saturated``, explain none: a report whose attempts were all refused has no copy to
  spare);
* **misplaced** — byte-identical to a report of this run, but in another topic, partition or
  date folder (it does not count as a copy: the report may then be lost);
* **altered** — carries a userId of this run but is not byte-for-byte any report the bench sent;
* **foreign** — a report of another bench run (its userId names another run id): not an
  error, since runs may share a record directory;
* **corrupt** — a line that is not JSON, or JSON without a ``userId`` string: garbage in a
  segment (a torn or overwritten write);
* **unexpected** — anything else: a userId no bench made, a client of this run the run file
  does not list (a lost worker's).

**out_of_order** counts first copies (present or failed_present) that came before a report
they must follow in their partition's log: within a request its reports are in array order;
in the closed and ticking modes, where a client sends its next request only after the
previous one was acknowledged, a user's requests are in sending order too (in the open model
a client's requests overlap, so only the order within each holds). Only one user's order is
defined: Kafka orders records per key, and lines carry no offsets. A last line without its
newline (a segment the sink is still writing) is not a line: it is counted in **partial**.

Any of lost, duplicated, unexpected, corrupt, altered, misplaced, out_of_order is an error (exit 1).

Speed: the regenerated lines and the landed lines are compared through Python's (C) hash of
their bytes, a whole request at a time where its lines are contiguous, so the common path
decodes no JSON and needs no per-line index; the rest goes line by line (the line index of a
client is built when a line with its userId first needs it).
"""

from __future__ import annotations

import array
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec

from bench.errors import RunFileError
from bench.expected import CLIENT_SHIFT, DAY_SHIFT, ONES, USER_DECODER, Expected, expect
from bench.identity import parse_run_id, parse_user_id
from bench.ledger import ClientLedger
from bench.profiles import make_profile
from footfall.errors import ConfigError
from footfall.layout import check_topic, parse_segment_name
from footfall.reports import ReportType, decode_report

__all__ = ["ERROR_COUNTERS", "LINE_COUNTERS", "VerifyResult", "verify", "write_result"]

_BLOCK: Final = 8 << 20  # read segments in blocks of whole lines: memory stays flat for big files
_SAMPLES: Final = 5
_CLOCK_SKEW: Final = dt.timedelta(minutes=15)
# The sink's checkpoint directory (one <partition>.json per partition it was assigned).
_CHECKPOINTS: Final = ("_footfall", "checkpoints")


class VerifyResult(msgspec.Struct, kw_only=True):
    """Outcome of :func:`verify` (see the module docstring). ``ok`` when no error counter is set."""

    acknowledged: int = 0  # reports of acknowledged requests (each expected exactly once, in place)
    present: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    altered: int = 0
    misplaced: int = 0
    out_of_order: int = 0
    foreign: int = 0  # lines of other bench runs (not an error)
    redelivered: int = 0  # extra copies explained by maybe-written failed attempts (not an error)
    failed_present: int = 0  # reports of failed-only requests that landed anyway
    failed_absent: int = 0
    partial: int = 0  # half-written last lines ignored
    corrupt: int = 0  # lines that are not JSON with a userId (garbage; not also in unexpected)
    lines: int = 0  # complete lines read
    files: int = 0
    run_id: str = ""
    partitions: dict[str, int] = msgspec.field(default_factory=dict)  # per topic, as used for placement
    by_type: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    samples: dict[str, list[str]] = msgspec.field(default_factory=dict)  # a few examples per problem

    @property
    def ok(self) -> bool:
        """True when nothing was lost, duplicated, unexpected, corrupt, altered, misplaced or out of order."""
        return not any(getattr(self, name) for name in ERROR_COUNTERS)

    def line(self) -> str:
        """``lost=… duplicated=… unexpected=… …`` (one line, for humans and scripts)."""
        return (
            f"lost={self.lost} duplicated={self.duplicated} unexpected={self.unexpected} partial={self.partial} "
            f"altered={self.altered} misplaced={self.misplaced} out_of_order={self.out_of_order} "
            f"foreign={self.foreign} acknowledged={self.acknowledged} present={self.present} "
            f"redelivered={self.redelivered} failed_present={self.failed_present} "
            f"failed_absent={self.failed_absent} corrupt={self.corrupt} lines={self.lines} files={self.files}"
        )


#: Line counters that partition ``lines`` (each complete line is in exactly one).
LINE_COUNTERS: Final = (
    "present",
    "failed_present",
    "redelivered",
    "duplicated",
    "misplaced",
    "altered",
    "foreign",
    "unexpected",
    "corrupt",
)
#: The counters any of which makes a run fail verification.
ERROR_COUNTERS: Final = ("lost", "duplicated", "unexpected", "corrupt", "altered", "misplaced", "out_of_order")


def _sample(result: VerifyResult, problem: str, text: str) -> None:
    bucket = result.samples.setdefault(problem, [])
    if len(bucket) < _SAMPLES:
        bucket.append(text)


def _text(line: bytes) -> str:
    return line[:160].decode(errors="replace")


def _load_run(path: Path) -> dict[str, Any]:
    from bench.report import RUN_FORMAT, RUN_VERSION

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
    if content.get("version") != RUN_VERSION:
        raise RunFileError(
            f"{path} is a version {content.get('version')} run file; this verify reads version {RUN_VERSION}: "
            "run the bench again with this version"
        )
    return content


class _Window(NamedTuple):
    first: str  # date=YYYY-MM-DD folder names the run's lines may be in (inclusive, ISO order)
    last: str


def verify(
    run_json_path: str | Path,
    record_directory: str | Path,
    visit_topic: str = "visit",
    activity_topic: str = "activity",
    partitions: int | None = None,
) -> VerifyResult:
    """Check the record directory against the run file; see the module docstring.

    Args:
        run_json_path: the run file.
        record_directory: the sink's record directory.
        visit_topic, activity_topic: the topics (directories) of each report type.
        partitions: the topics' partition count; by default read from the sink's checkpoints
            and the segment names.

    Raises:
        RunFileError: the run file is missing, unreadable, not a bench run file, or of another
            version, or the record directory does not exist.
        ConfigError: a topic name is not a legal (path-safe) topic name.
    """
    if partitions is not None and partitions < 1:
        raise ConfigError(f"--partitions: expected a partition count >= 1, got {partitions}")
    run = _load_run(Path(run_json_path))
    root = Path(record_directory)
    if not root.is_dir():
        raise RunFileError(f"record directory {record_directory} does not exist (--record-directory)")
    topics = {ReportType.VISIT: check_topic(visit_topic), ReportType.ACTIVITY: check_topic(activity_topic)}
    try:
        start_date = dt.date.fromisoformat(run["start_date"])
        run_id = parse_run_id(str(run["run_id"]))
        profile = make_profile(run["profile"], int(run["seed"]), start_date, run_id)
        ledgers = [ClientLedger.from_json(entry) for entry in run["ledger"]["clients"]]
        started = dt.datetime.fromisoformat(run["started_at"])
        finished = started + dt.timedelta(seconds=float(run["elapsed_s"]))
        sequential = run["mode"] != "open"
    except (KeyError, TypeError, ValueError) as exc:
        # Words, not a repr: KeyError('seed') says "no 'seed' field".
        what = f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc)
        raise RunFileError(f"run file {run_json_path} is malformed: {what}") from exc
    window = _Window(
        f"date={(started - _CLOCK_SKEW).astimezone(dt.UTC).date().isoformat()}",
        f"date={(finished + _CLOCK_SKEW).astimezone(dt.UTC).date().isoformat()}",
    )
    result = VerifyResult(run_id=str(run["run_id"]))
    counts = {t: _count_partitions(root, topics[t], partitions) for t in ReportType}
    result.partitions = {topics[t]: counts[t][0] for t in ReportType}
    expected = expect(ledgers, profile, {t: counts[t][0] for t in ReportType})
    shift = CLIENT_SHIFT if sequential else DAY_SHIFT
    for report_type in ReportType:
        stats = dict.fromkeys((*LINE_COUNTERS, "out_of_order", "lines", "partial"), 0)
        other = expected[ReportType.ACTIVITY if report_type is ReportType.VISIT else ReportType.VISIT]
        _scan(
            result,
            stats,
            root,
            topics[report_type],
            counts[report_type],
            expected[report_type],
            other,
            window,
            run_id,
            shift,
            report_type,
        )
        _settle(result, stats, expected[report_type], report_type)
        for name, n in stats.items():
            setattr(result, name, getattr(result, name) + n)
        result.by_type[str(report_type)] = stats
    return result


def _count_partitions(root: Path, topic: str, given: int | None) -> tuple[int, int]:
    """(partitions of ``topic``, of ``<topic>.retry``): ``given``, else the most any source shows."""

    def seen(name: str) -> int:
        best = 0
        state = root.joinpath(*_CHECKPOINTS, name)
        if state.is_dir():
            for path in state.glob("*.json"):
                if path.stem.isdigit():
                    best = max(best, int(path.stem) + 1)
        for path in root.glob(f"{topic}/date=*/{name}+*.jsonl"):
            parsed = parse_segment_name(path.name)
            if parsed is not None and parsed.topic == name:
                best = max(best, parsed.partition + 1)
        return best

    main = given if given is not None else max(1, seen(topic))
    return main, max(1, seen(f"{topic}.retry"))


def _segments(root: Path, topic: str) -> dict[tuple[str, int], list[tuple[int, int, Path]]]:
    """Segment files of ``topic``'s directory per log (segment topic, partition), in log order."""
    logs: dict[tuple[str, int], list[tuple[int, int, Path]]] = {}
    for path in root.glob(f"{topic}/date=*/*.jsonl"):
        parsed = parse_segment_name(path.name)
        if parsed is None:
            continue
        logs.setdefault((parsed.topic, parsed.partition), []).append((parsed.generation, parsed.start_offset, path))
    for files in logs.values():
        files.sort()
    return dict(sorted(logs.items()))


def _line_blocks(path: Path, stats: dict[str, int]) -> Iterator[bytes]:
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
        stats["partial"] += 1  # a segment still being written: its last line is incomplete


def _scan(
    result: VerifyResult,
    stats: dict[str, int],
    root: Path,
    topic: str,
    partition_counts: tuple[int, int],
    exp: Expected,
    other: Expected,
    window: _Window,
    run_id: int,
    shift: int,
    report_type: ReportType,
) -> None:
    """Count every line of ``topic``'s files (see the module docstring).

    A request's lines are contiguous in its partition's log (the gateway appends them to one
    batch in order), so each position first tries to match a whole request: one hash of its
    first line, one of the request's bytes. Whatever does not match (a request split by a
    file rotation or a read block, copies, faults, other runs' lines) goes line by line.
    """
    scan = _LogScan(result, stats, root, exp, other, run_id, shift, report_type)
    retry_topic = f"{topic}.retry"
    retry_partitions = array.array("l", [p % partition_counts[1] for p in exp.partition])
    first_get, request_bytes, request_hash = exp.request_of.get, exp.request_bytes, exp.request_hash
    for (log_topic, partition), files in _segments(root, topic).items():
        if log_topic == topic:
            scan.parts = exp.partition
        elif log_topic == retry_topic:
            scan.parts = retry_partitions
        else:
            scan.parts = None  # a file of another topic in this directory: nothing of ours belongs here
        scan.partition = partition
        scan.last = {}
        for _generation, _offset, path in files:
            scan.path = path
            scan.in_place = scan.parts is not None and window.first <= path.parent.name <= window.last
            result.files += 1
            for data in _line_blocks(path, stats):
                size, pos, loose = len(data), 0, -1  # loose: start of lines not matched as requests
                while pos < size:
                    end = data.index(b"\n", pos)
                    r = first_get(hash(data[pos:end]))
                    if r is not None:
                        length = request_bytes[r]
                        if pos + length <= size and hash(data[pos : pos + length]) == request_hash[r]:
                            if loose >= 0:
                                scan.take_lines(data[loose:pos])
                                loose = -1
                            scan.request(r, data[pos : pos + length])
                            pos += length
                            continue
                    if loose < 0:
                        loose = pos
                    pos = end + 1
                if loose >= 0:
                    scan.take_lines(data[loose:])
    for name in ("present", "failed_present", "redelivered", "duplicated", "misplaced", "out_of_order", "lines"):
        stats[name] += getattr(scan, name)


class _LogScan:
    """The counting state of one topic's scan; see :func:`_scan`."""

    def __init__(
        self,
        result: VerifyResult,
        stats: dict[str, int],
        root: Path,
        exp: Expected,
        other: Expected,
        run_id: int,
        shift: int,
        report_type: ReportType,
    ) -> None:
        self.result, self.stats, self.root = result, stats, root
        self.exp, self.other, self.run_id, self.report_type = exp, other, run_id, report_type
        self.shift, self.low = shift, (1 << shift) - 1
        self.copies = exp.copies = bytearray(len(exp.order))
        self.users: dict[str, int] = {}  # userId -> what it is (_user_kind), for lines matching no report
        self.parts: array.array[int] | None = None  # the partition of each report, for this log
        self.partition = 0
        self.last: dict[int, int] = {}  # order scope -> highest order position seen in this log
        self.path = root
        self.in_place = False  # a log of this topic (or its retry topic), in a date folder of the run
        self.present = self.failed_present = self.redelivered = self.duplicated = 0
        self.misplaced = self.out_of_order = self.lines = 0

    def _where(self, line: bytes) -> str:
        return f"{self.path.relative_to(self.root)}: {_text(line)}"

    def request(self, r: int, chunk: bytes) -> None:
        """A whole request, byte for byte, at this place in the log."""
        exp = self.exp
        first, n = exp.request_start[r], exp.request_size[r]
        self.lines += n
        if not self.in_place or self.parts is None or self.parts[first] != self.partition:
            self.misplaced += n
            _sample(self.result, "misplaced", self._where(chunk))
            return
        copies = self.copies
        if copies.count(0, first, first + n) != n:  # some are further copies: one by one
            for k, line in zip(range(first, first + n), chunk.split(b"\n"), strict=False):
                self._report(k, line)
            return
        copies[first : first + n] = ONES[:n]
        position = exp.order[first]
        scope, value = position >> self.shift, position & self.low
        # The request's positions are value .. value + n - 1: those below the highest one seen
        # for this scope came too early; the rest are in order.
        behind = min(n, self.last.get(scope, -1) - value)
        if behind > 0:
            self.out_of_order += behind
            _sample(self.result, "out_of_order", self._where(chunk))
        if behind < n:
            self.last[scope] = value + n - 1
        if exp.acked[first]:
            self.present += n
        elif exp.allowed[first]:
            self.failed_present += n
        else:
            self.duplicated += n
            _sample(self.result, "duplicated", self._where(chunk))

    def take_lines(self, data: bytes) -> None:
        """Complete lines (each ending in a newline) that are not a whole request."""
        lines = data.split(b"\n")
        lines.pop()
        self.lines += len(lines)
        find = self.exp.find
        for line in lines:
            n = find(line)
            if n is None:
                _classify(
                    self.result, self.stats, line, self.exp, self.other, self.run_id, self.report_type, self.path,
                    self.users,
                )  # fmt: skip
            else:
                self._report(n, line)

    def _report(self, n: int, line: bytes) -> None:
        """One line that is byte for byte report ``n`` of this run."""
        if not self.in_place or self.parts is None or self.parts[n] != self.partition:
            self.misplaced += 1
            _sample(self.result, "misplaced", self._where(line))
            return
        exp, copies = self.exp, self.copies
        c = copies[n]
        if c:  # a further copy: explained by a maybe-written attempt, or a duplicate
            c += 1
            copies[n] = min(c, 255)
            if c <= exp.allowed[n]:
                self.redelivered += 1
            else:
                self.duplicated += 1
                _sample(self.result, "duplicated", f"x{c} {self._where(line)}")
            return
        copies[n] = 1
        position = exp.order[n]
        scope, value = position >> self.shift, position & self.low
        if self.last.get(scope, -1) > value:
            self.out_of_order += 1
            _sample(self.result, "out_of_order", self._where(line))
        else:
            self.last[scope] = value
        if exp.acked[n]:
            self.present += 1
        elif exp.allowed[n]:
            self.failed_present += 1
        else:  # every attempt was refused before producing: it should not be here
            self.duplicated += 1
            _sample(self.result, "duplicated", f"x1 {self._where(line)}")


_OURS: Final = 0  # a userId of this run's ledger
_OURS_UNKNOWN: Final = 1  # this run's id, a client the ledger does not have (a lost worker's)
_FOREIGN: Final = 2  # another bench run's userId
_STRANGER: Final = 3  # no bench made it


def _user_kind(user: str, run_id: int, clients: dict[int, str], cache: dict[str, int]) -> int:
    kind = cache.get(user)
    if kind is None:
        bench_user = parse_user_id(user)
        if bench_user is None:
            kind = _STRANGER
        elif bench_user.run_id != run_id:
            kind = _FOREIGN
        else:
            kind = _OURS if bench_user.client in clients else _OURS_UNKNOWN
        cache[user] = kind
    return kind


def _classify(
    result: VerifyResult,
    stats: dict[str, int],
    line: bytes,
    exp: Expected,
    other: Expected,
    run_id: int,
    report_type: ReportType,
    path: Path,
    cache: dict[str, int],
) -> None:
    """A line that is no report of this type this run sent: misplaced, altered, foreign or unexpected."""
    if other.find(line) is not None:
        stats["misplaced"] += 1  # a report of the other type, in this type's topic
        _sample(result, "misplaced", f"{path.name}: {_text(line)}")
        return
    try:
        user = USER_DECODER.decode(line).userId
    except msgspec.DecodeError:
        stats["corrupt"] += 1
        _sample(result, "corrupt", f"{path.name}: {_text(line)}")
        return
    kind = _user_kind(user, run_id, exp.user_of, cache)
    if kind == _OURS:
        stats["altered"] += 1
        _sample(result, "altered", f"{path.name}: {_text(line)}")
        return
    if kind == _FOREIGN:
        try:
            decode_report(report_type, line)
        except (msgspec.DecodeError, ValueError):
            pass  # a bench userId on something that is not a report: unexpected
        else:
            stats["foreign"] += 1
            return
    stats["unexpected"] += 1
    why = " (a client of this run missing from the run file)" if kind == _OURS_UNKNOWN else ""
    _sample(result, "unexpected", f"{path.name}: {_text(line)}{why}")


def _settle(result: VerifyResult, stats: dict[str, int], exp: Expected, report_type: ReportType) -> None:
    """Report-side counts: acknowledged, lost, failed_absent (after every line was read)."""
    copies, acked = exp.copies, exp.acked
    acknowledged = acked.count(1)
    # Reports with no copy in place: lost (acknowledged) or failed_absent.
    missing = [n for n, c in enumerate(copies) if not c] if copies.count(0) else []
    lost = [n for n in missing if acked[n]]
    stats["acknowledged"] = acknowledged
    stats["lost"] = len(lost)
    stats["failed_absent"] = len(missing) - len(lost)
    for n in lost[:_SAMPLES]:
        position = exp.order[n]
        client, day, index = position >> CLIENT_SHIFT, (position >> DAY_SHIFT) & 0xFFFFFFFF, position & 0xFF
        _sample(result, "lost", f"{report_type} userId={exp.user_of.get(client)} day={day} report={index}")


def write_result(path: str, result: VerifyResult) -> None:
    """Write ``result`` as JSON (with ``ok``)."""
    content = msgspec.to_builtins(result)
    content["ok"] = result.ok
    Path(path).write_bytes(msgspec.json.encode(content))
