"""Request bodies: size limits, bounded decompression, decoding and validation.

The caller has the compressed body in memory (its size was checked against
``--max-body-bytes`` from Content-Length before it was read). Decompression runs in
bounded steps (``zlib.decompressobj().decompress(data, max_length)``), so a gzip bomb
costs at most the decompressed cap in memory and a few milliseconds before it is refused.

A request is accepted or rejected as a unit: :func:`decode_body` returns every report
or raises one :class:`~gateway.errors.GatewayError`.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import msgspec

from footfall.reports import Activity, ReportType, Visit, decode_report, decode_reports
from gateway.errors import (
    BadRequestError,
    FieldError,
    PayloadTooLargeError,
    ReportValidationError,
    UnsupportedMediaError,
)

__all__ = ["BodyLimits", "check_content_type", "decode_body", "decompress", "parse_content_encoding"]

#: Expansion-ratio checks start above this many decompressed bytes (small JSON compresses well too).
RATIO_FLOOR: Final = 64 * 1024
_CHUNK: Final = 256 * 1024
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_ZLIB_WBITS: Final = zlib.MAX_WBITS
_RAW_WBITS: Final = -zlib.MAX_WBITS
_RAW_ITEMS: Final = msgspec.json.Decoder(list[msgspec.Raw])
_PATH: Final = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`$")
_POST_INIT_FIELD: Final = re.compile(r"^(\w+) must be")

_ENCODINGS: Final = {"": "identity", "identity": "identity", "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class BodyLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Size limits of one request body."""

    max_body_bytes: int
    max_decompressed_bytes: int
    max_expansion_ratio: int

    def decompressed_cap(self, compressed: int) -> int:
        """The largest decompressed size allowed for a body of ``compressed`` bytes."""
        return min(self.max_decompressed_bytes, max(RATIO_FLOOR, compressed * self.max_expansion_ratio))


def check_content_type(value: str | None) -> None:
    """Accept ``application/json`` (any parameters, e.g. ``charset=utf-8``).

    Raises:
        UnsupportedMediaError: another or no media type.
    """
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaError(f"Content-Type {value!r} is not supported: send a JSON array as application/json")


def parse_content_encoding(value: str | None) -> str:
    """``gzip``, ``deflate`` or ``identity`` from a Content-Encoding header (one coding only).

    Raises:
        UnsupportedMediaError: an unknown coding, or a chain of codings.
    """
    coding = _ENCODINGS.get((value or "").strip().lower())
    if coding is None:
        raise UnsupportedMediaError(f"Content-Encoding {value!r} is not supported: use gzip, deflate or identity")
    return coding


def decompress(data: bytes, coding: str, limits: BodyLimits) -> bytes:
    """Decode ``data`` (``gzip``/``deflate``/``identity``) under the limits.

    Multi-member gzip is accepted (it is legal gzip); bytes after the last member are not.

    Raises:
        PayloadTooLargeError: the body, compressed or decompressed, is over its limit.
        BadRequestError: the stream is corrupt or truncated.
    """
    if len(data) > limits.max_body_bytes:
        raise PayloadTooLargeError(
            f"body is {len(data)} bytes; the limit is {limits.max_body_bytes} bytes (as sent): send smaller requests"
        )
    if coding == "identity":
        if len(data) > limits.max_decompressed_bytes:
            raise PayloadTooLargeError(
                f"body is {len(data)} bytes; the limit is {limits.max_decompressed_bytes} bytes: send smaller requests"
            )
        return data
    cap = limits.decompressed_cap(len(data))
    if coding == "gzip":
        return _inflate(data, _GZIP_WBITS, cap, "gzip")
    try:
        return _inflate(data, _ZLIB_WBITS, cap, "deflate")
    except BadRequestError:
        # Some clients send raw deflate (no zlib header) as "deflate"; HTTP allows both readings.
        return _inflate(data, _RAW_WBITS, cap, "deflate")


def _too_large(cap: int, coding: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{coding} body expands past {cap} bytes (limit: --max-decompressed-bytes, or the expansion ratio): "
        "send smaller requests"
    )


def _inflate(data: bytes, wbits: int, cap: int, coding: str) -> bytes:
    # Fast path: one call; max_length=cap+1 bounds the output whatever the input is.
    parts: list[bytes] = []
    total = 0
    pending = data
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            chunk = inflater.decompress(pending, min(cap + 1 - total, _CHUNK))
            while True:
                total += len(chunk)
                if total > cap:
                    raise _too_large(cap, coding)
                if chunk:
                    parts.append(chunk)
                if inflater.eof or not inflater.unconsumed_tail:
                    break
                chunk = inflater.decompress(inflater.unconsumed_tail, min(cap + 1 - total, _CHUNK))
            if not inflater.eof:
                raise BadRequestError(f"{coding} body is truncated: send the complete stream")
            pending = inflater.unused_data
            if not pending:
                break
            if wbits != _GZIP_WBITS:
                raise BadRequestError(f"{coding} body has {len(pending)} bytes after the end of the stream")
    except zlib.error as exc:
        raise BadRequestError(f"{coding} body is corrupt ({exc}): send a valid {coding} stream") from exc
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def decode_body(report_type: ReportType, data: bytes, max_errors: int) -> list[Visit] | list[Activity]:
    """Decode and validate a JSON array of reports: all of them, or an error.

    Raises:
        BadRequestError: not JSON (including NaN/Infinity literals), or nested too deep.
        ReportValidationError: JSON that breaks the schema; lists up to ``max_errors`` bad reports.
    """
    try:
        reports = decode_reports(report_type, data)
    except msgspec.ValidationError:
        raise _explain(report_type, data, max_errors) from None
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestError("body is nested too deeply: send a flat JSON array of report objects") from None
    if not reports:
        raise ReportValidationError(
            "the array is empty: send at least one report", [FieldError(index=None, field="$", message="empty array")]
        )
    return reports


def _field_error(index: int | None, message: str) -> FieldError:
    m = _PATH.search(message)
    if m is not None:
        return FieldError(index=index, field=m[1] or "$", message=message[: m.start()])
    m = _POST_INIT_FIELD.match(message)
    return FieldError(index=index, field=m[1] if m else "$", message=message)


def _explain(report_type: ReportType, data: bytes, max_errors: int) -> BadRequestError | ReportValidationError:
    """Slow path, invalid bodies only: validate item by item to list every bad report."""
    try:
        items = _RAW_ITEMS.decode(data)
    except msgspec.ValidationError as exc:  # not an array at all
        return ReportValidationError(
            f"body must be a JSON array of {report_type} reports", [_field_error(None, str(exc))]
        )
    except msgspec.DecodeError as exc:
        return BadRequestError(f"body is not valid JSON: {exc}")
    except RecursionError:
        return BadRequestError("body is nested too deeply: send a flat JSON array of report objects")
    errors: list[FieldError] = []
    bad = 0
    for index, item in enumerate(items):
        try:
            decode_report(report_type, item)
        except msgspec.ValidationError as exc:
            bad += 1
            if len(errors) < max_errors:
                errors.append(_field_error(index, str(exc)))
        except (msgspec.DecodeError, RecursionError):  # pragma: no cover - Raw items are well-formed
            bad += 1
            if len(errors) < max_errors:
                errors.append(FieldError(index=index, field="$", message="not a valid report"))
    shown = "" if bad <= len(errors) else f" (first {len(errors)} listed)"
    return ReportValidationError(f"{bad} of {len(items)} reports are invalid{shown}; nothing was accepted", errors)
