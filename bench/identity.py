"""Run ids and the userIds derived from them: a run's reports are told apart from every other run's.

Every bench run draws a random 48-bit *run id* (12 hex digits, written to the run file). Each
simulated client's userId is derived from (run id, client index), so two runs with the same
seed send the same distributions (the same times, types, places: the seeded draws are
unchanged) under different userIds, and ``bench verify`` never mistakes an earlier run's
landed reports for this run's.

The userId is a version-4 UUID (the RFC 4122 version and variant bits are set) laid out as:

* the first 48 bits (the first 12 hex digits, ``xxxxxxxx-xxxx``): the run id, so an operator
  finds a run's reports with ``grep -r 'userId":"3f9a0c5e-21b7'``;
* 32 bits: the client index (bits 64-75 and 42-61);
* the last 42 bits: a tag, a keyed BLAKE2b of (run id, client). A userId whose tag matches is
  one the bench made (for *some* run); a random or edited userId matches with chance 2^-42.

The userId's murmur2 (its Kafka partition) still spreads evenly: the tag bits differ per client.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Final, NamedTuple

__all__ = [
    "RUN_ID_BITS",
    "BenchUser",
    "format_run_id",
    "new_run_id",
    "parse_run_id",
    "parse_user_id",
    "run_user_id",
]

RUN_ID_BITS: Final = 48
_CLIENT_BITS: Final = 32
_TAG_BITS: Final = 42
_TAG_MASK: Final = (1 << _TAG_BITS) - 1
_PERSON: Final = b"footfall-userid"
# Field positions in the 128-bit int (bit 0 = least significant); 76-79 and 62-63 are version/variant.
_RUN_SHIFT: Final = 80
_CLIENT_HIGH_SHIFT: Final = 64  # client bits 20..31 -> bits 64..75
_CLIENT_LOW_SHIFT: Final = 42  # client bits 0..19 -> bits 42..61
_LOW20: Final = (1 << 20) - 1
_VERSION_VARIANT: Final = (0x4 << 76) | (0x2 << 62)


class BenchUser(NamedTuple):
    """What a bench-made userId says: the run it belongs to and the client index."""

    run_id: int
    client: int


def new_run_id() -> int:
    """A fresh random run id (48 bits, never 0)."""
    return secrets.randbits(RUN_ID_BITS) or 1


def parse_run_id(text: str) -> int:
    """The run id of a run file (12 hex digits).

    Raises:
        ValueError: not 1-12 hex digits.
    """
    if not 0 < len(text) <= RUN_ID_BITS // 4:
        raise ValueError(f"run id {text!r} is not 1-12 hex digits")
    return int(text, 16)


def format_run_id(run_id: int) -> str:
    """``run_id`` as the 12 hex digits the run file and the userIds show."""
    return f"{run_id:012x}"


def _tag(run_id: int, client: int) -> int:
    data = run_id.to_bytes(6, "big") + client.to_bytes(4, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=6, person=_PERSON).digest(), "big") & _TAG_MASK


def run_user_id(run_id: int, client: int) -> uuid.UUID:
    """The userId of client ``client`` in run ``run_id`` (see the module docstring)."""
    if not 0 <= run_id < 1 << RUN_ID_BITS or not 0 <= client < 1 << _CLIENT_BITS:
        raise ValueError(f"run id {run_id} or client {client} out of range")
    value = (
        (run_id << _RUN_SHIFT)
        | ((client >> 20) << _CLIENT_HIGH_SHIFT)
        | ((client & _LOW20) << _CLIENT_LOW_SHIFT)
        | _tag(run_id, client)
        | _VERSION_VARIANT
    )
    return uuid.UUID(int=value)


def parse_user_id(text: str) -> BenchUser | None:
    """The (run id, client) of a bench-made userId; ``None`` for any other string."""
    try:
        value = uuid.UUID(text).int
    except ValueError:
        return None
    if value & ((0xF << 76) | (0x3 << 62)) != _VERSION_VARIANT:
        return None
    run_id = value >> _RUN_SHIFT
    client = (((value >> _CLIENT_HIGH_SHIFT) & 0xFFF) << 20) | ((value >> _CLIENT_LOW_SHIFT) & _LOW20)
    if value & _TAG_MASK != _tag(run_id, client):
        return None
    return BenchUser(run_id, client)
