"""What the bench sent, regenerated for ``bench verify``: every report's exact line, partition and order.

Every report the bench sent is a pure function of (profile, seed, run id, client, day, type);
the run file's ledgers say which requests were acknowledged and how many attempts of each
failed (and of those how many the gateway may have written). :func:`expect` replays the
bench's draws in its order and indexes each report of each type in an :class:`Expected`: the
hash of its line, the partition its key maps to, how many copies may land, its place in its
user's order, and per request the hash of all its lines (so a whole request is matched at once).
"""

from __future__ import annotations

import array
from typing import Final

import msgspec

from bench.errors import RunFileError
from bench.ledger import ClientLedger
from bench.profiles import Profile
from footfall.kafka import partition_for
from footfall.reports import ReportType

__all__ = ["CLIENT_SHIFT", "DAY_SHIFT", "MAX_PER_REQUEST", "ONES", "USER_DECODER", "Expected", "expect"]

# A report's order fields: (client << 40) | (day << 8) | index. In the open model the order
# scope is one request (client, day): shift 8; in the sequential modes one client: shift 40.
DAY_SHIFT: Final = 8
CLIENT_SHIFT: Final = 40
MAX_PER_REQUEST: Final = 1 << DAY_SHIFT
ONES: Final = b"\x01" * MAX_PER_REQUEST
_TYPES: Final = tuple(ReportType)


class _UserId(msgspec.Struct):
    userId: str


USER_DECODER: Final = msgspec.json.Decoder(_UserId)


class Expected:
    """Every report of one type the bench sent, indexed by the hash of its exact line."""

    __slots__ = (
        "acked",
        "allowed",
        "client_of",
        "client_range",
        "copies",
        "index",
        "indexed",
        "line_hash",
        "order",
        "partition",
        "request_bytes",
        "request_hash",
        "request_of",
        "request_size",
        "request_start",
        "user_of",
    )

    def __init__(self) -> None:
        # hash(line) -> report number, filled per client on first need (:meth:`find`): most
        # lines are matched as whole requests and never need it.
        self.index: dict[int, int] = {}
        self.indexed: set[int] = set()  # clients whose lines are in ``index``
        self.line_hash = array.array("q")  # per report: hash of its line
        self.client_range: dict[int, tuple[int, int]] = {}  # client -> its report numbers [a, b)
        self.client_of: dict[str, int] = {}  # userId -> client
        self.order = array.array("q")  # (client << 40) | (day << 8) | index
        self.partition = array.array("l")  # the partition its key maps to
        self.allowed = bytearray()  # copies that may land (1 per ack, 1 per maybe-written attempt)
        self.acked = bytearray()  # 1 for a report of an acknowledged request
        self.copies = bytearray()  # copies found in place (filled by _scan, saturating at 255)
        self.user_of: dict[int, str] = {}  # client -> userId (for samples)
        # Per request: its first line's hash -> request number; its first report number, its
        # number of reports, its bytes' length and hash (all its lines, as the gateway lands them).
        self.request_of: dict[int, int] = {}
        self.request_start = array.array("q")
        self.request_size = array.array("l")
        self.request_bytes = array.array("q")
        self.request_hash = array.array("q")

    def find(self, line: bytes) -> int | None:
        """The report number whose line is ``line`` byte for byte, or ``None``."""
        h = hash(line)
        n = self.index.get(h)
        if n is not None:
            return n
        # Only a report of the client whose userId the line carries can be byte-identical to it.
        try:
            client = self.client_of.get(USER_DECODER.decode(line).userId)
        except msgspec.DecodeError:
            return None
        if client is None or client in self.indexed:
            return None
        self.indexed.add(client)
        a, b = self.client_range[client]
        self.index.update(zip(self.line_hash[a:b], range(a, b), strict=True))
        return self.index.get(h)


def expect(
    ledgers: list[ClientLedger], profile: Profile, partitions: dict[ReportType, int]
) -> dict[ReportType, Expected]:
    """Regenerate every report the ledgers say was sent (the draws in the bench's order)."""
    out = {t: Expected() for t in ReportType}
    for ledger in ledgers:
        client = profile.client(ledger.client)
        user = str(client.user_id)
        if user != ledger.user_id:
            raise RunFileError(
                f"client {ledger.client}: the run file says userId {ledger.user_id}, the profile makes {user}; "
                "the run file was edited or written by another bench version"
            )
        key = user.encode()
        last_day = max(max(max(ledger.acked[t], default=-1), max(ledger.failed[t], default=-1)) for t in ReportType)
        for t in ReportType:
            out[t].user_of[ledger.client] = user
        part = {t: array.array("l", [partition_for(key, partitions[t])]) for t in ReportType}
        sent: dict[ReportType, list[bytes]] = {t: [] for t in ReportType}
        acked_days = {t: set(ledger.acked[t]) for t in ReportType}
        lines_of = client.lines
        for day in range(last_day + 1):
            for t in _TYPES:  # visit then activity: the order the bench draws them in
                data = lines_of(t, day)
                acked = day in acked_days[t]
                if not acked and day not in ledger.failed[t]:
                    continue  # generated to keep the draws in step, never sent
                exp = out[t]
                lines = data.split(b"\n")
                lines.pop()  # after the last newline
                n = len(lines)
                if n > MAX_PER_REQUEST:
                    raise RunFileError(f"client {ledger.client} day {day}: {n} reports in one request")
                base = (ledger.client << CLIENT_SHIFT) | (day << DAY_SHIFT)
                if n:
                    exp.request_of[hash(lines[0])] = len(exp.request_start)
                    exp.request_start.append(len(exp.order))
                    exp.request_size.append(n)
                    exp.request_bytes.append(len(data))
                    exp.request_hash.append(hash(data))
                exp.order.extend(range(base, base + n))
                if ledger.failed[t]:
                    exp.allowed.extend(bytes((min(255, acked + ledger.maybe_written(t, day)),)) * n)
                else:
                    exp.allowed.extend(ONES[:n])
                exp.acked.extend(ONES[:n] if acked else bytes(n))
                sent[t] += lines
        for t in ReportType:  # one C-level pass per client and type (numbers follow the order array)
            exp, lines = out[t], sent[t]
            first = len(exp.partition)
            exp.line_hash.extend(map(hash, lines))
            exp.client_range[ledger.client] = (first, first + len(lines))
            exp.client_of[out[t].user_of[ledger.client]] = ledger.client
            exp.partition.extend(part[t] * len(lines))
    return out
