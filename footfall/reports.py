"""Report schemas: the wire format of the original Go client.

Two report types, visit and activity, posted as JSON arrays. Field names are the
client's camelCase, times are Unix epoch milliseconds. Decoding is strict about
types and ranges, drops unknown fields, and names the failing field in its error:
``Expected `int`, got `str` - at `$[3].poiId```.

Encoders and decoders are built once here and reused (msgspec perf tips).
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Final

import msgspec

__all__ = [
    "MAX_EPOCH_MS",
    "SCHEMA_VERSION",
    "Activity",
    "Report",
    "ReportType",
    "Visit",
    "decode_report",
    "decode_reports",
    "encode_report",
    "report_key",
]

#: Version of the record value layout written to Kafka (a Kafka header carries it).
SCHEMA_VERSION: Final = 1

#: 9999-12-31T23:59:59.999Z: later times are certainly bogus and break date partitioning.
MAX_EPOCH_MS: Final = 253_402_300_799_999

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_INT32_MAX: Final = 2**31 - 1

Int64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]
SmallInt = Annotated[int, msgspec.Meta(ge=0, le=_INT32_MAX)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_MS, description="Unix epoch milliseconds")]
Latitude = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]


class ReportType(enum.StrEnum):
    """The kinds of report; the value is also the default topic name and the URL segment."""

    VISIT = "visit"
    ACTIVITY = "activity"


# gc=False: a report holds only ints, floats and a UUID (itself ints), so it can never be part of a
# reference cycle; untracked, the gateway's 12 reports per request no longer count towards (and are
# no longer scanned by) the cyclic GC's generation-0 collections.
class Visit(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=False, gc=False):
    """A stay at a point of interest: ``exitTime >= enterTime``."""

    dataVer: SmallInt
    userId: uuid.UUID
    algorithmType: SmallInt
    enterTime: EpochMs
    exitTime: EpochMs
    poiId: Int64
    latitude: Latitude
    longitude: Longitude

    def __post_init__(self) -> None:
        if self.exitTime < self.enterTime:
            raise ValueError("exitTime must be >= enterTime")

    @property
    def time_ms(self) -> int:
        """The report's own time (used for date partitioning and identity)."""
        return self.enterTime


class Activity(msgspec.Struct, frozen=True, forbid_unknown_fields=False, omit_defaults=False, gc=False):
    """A movement between two places: ``endTime >= startTime``."""

    dataVer: SmallInt
    userId: uuid.UUID
    activityType: SmallInt
    startTime: EpochMs
    endTime: EpochMs
    startLatitude: Latitude
    startLongitude: Longitude
    endLatitude: Latitude
    endLongitude: Longitude

    def __post_init__(self) -> None:
        if self.endTime < self.startTime:
            raise ValueError("endTime must be >= startTime")

    @property
    def time_ms(self) -> int:
        """The report's own time (used for date partitioning and identity)."""
        return self.startTime


Report = Visit | Activity

REPORT_CLASSES: Final[dict[ReportType, type[Visit] | type[Activity]]] = {
    ReportType.VISIT: Visit,
    ReportType.ACTIVITY: Activity,
}

_ARRAY_DECODERS: Final[dict[ReportType, msgspec.json.Decoder[list[Visit]] | msgspec.json.Decoder[list[Activity]]]] = {
    ReportType.VISIT: msgspec.json.Decoder(list[Visit]),
    ReportType.ACTIVITY: msgspec.json.Decoder(list[Activity]),
}
_ONE_DECODERS: Final[dict[ReportType, msgspec.json.Decoder[Visit] | msgspec.json.Decoder[Activity]]] = {
    ReportType.VISIT: msgspec.json.Decoder(Visit),
    ReportType.ACTIVITY: msgspec.json.Decoder(Activity),
}
_ENCODER: Final = msgspec.json.Encoder()


def decode_reports(report_type: ReportType, body: bytes) -> list[Visit] | list[Activity]:
    """Decode a JSON array of reports.

    Raises:
        msgspec.DecodeError: malformed JSON (``msgspec.ValidationError``, a subclass,
            for a well-formed document that breaks the schema; its message names the
            field as ``$[index].field``).
    """
    return _ARRAY_DECODERS[report_type].decode(body)


def decode_report(report_type: ReportType, value: bytes) -> Visit | Activity:
    """Decode one report (a Kafka record value). Raises like :func:`decode_reports`."""
    return _ONE_DECODERS[report_type].decode(value)


def encode_report(report: Report) -> bytes:
    """Encode one report compactly (unknown fields are already gone)."""
    return _ENCODER.encode(report)


def report_key(report: Report) -> tuple[str, int]:
    """Identity of a generated report: (userId, enter/start time)."""
    return str(report.userId), report.time_ms
