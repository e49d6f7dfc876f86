"""Errors the gateway answers with. Each carries its HTTP status and a JSON-able detail.

Hierarchy (``GatewayError`` is a :class:`~footfall.errors.FootfallError`)::

    GatewayError                 root; ``status`` is the HTTP status it maps to
    ├── BadRequestError          400 malformed JSON or gzip/deflate stream
    ├── UnauthorizedError        401 API keys are configured and none (or a wrong one) was sent
    ├── PayloadTooLargeError     413 body too large, compressed or decompressed (or expands too much)
    ├── UnsupportedMediaError    415 Content-Type or Content-Encoding not supported
    ├── ReportValidationError    422 well-formed JSON that breaks the report schema
    └── UnavailableError         503 retriable (code ``unavailable``: starting or stopping)
        ├── SaturatedError       the worker's in-flight byte cap is reached
        ├── BrokerDownError      the broker probe fails: Kafka is unreachable
        ├── ProduceFailedError   Kafka failed the batch holding the reports
        └── ProduceTimeoutError  the broker did not acknowledge within --produce-timeout-ms

Client faults (4xx) are never retriable; ``retriable`` is True only for 503s. A batch that
failed in Kafka becomes its 503 in :func:`produce_failure` (through ``footfall.kafka.broker_error``,
the one translation of the Kafka client's errors).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from footfall.errors import BrokerOutcomeUnknownError, FootfallError
from footfall.kafka import broker_error

__all__ = [
    "REJECTION_CODES",
    "BadRequestError",
    "BrokerDownError",
    "FieldError",
    "GatewayError",
    "PayloadTooLargeError",
    "ProduceFailedError",
    "ProduceTimeoutError",
    "ReportValidationError",
    "SaturatedError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaError",
    "produce_failure",
]


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One invalid report in a 422 answer."""

    index: int | None = msgspec.field(default=None)
    """Position of the report in the array (null when the body itself is not an array)."""
    field: str | None = None
    """The offending field (``poiId``, ``$`` for the whole item), null when not known."""
    message: str
    """What was wrong, in msgspec's words: ``Expected `int`, got `str```."""


class GatewayError(FootfallError):
    """Root of the errors the gateway turns into HTTP answers."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retriable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(GatewayError):
    status = 400
    code = "bad_request"


class UnauthorizedError(GatewayError):
    status = 401
    code = "unauthorized"


class PayloadTooLargeError(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaError(GatewayError):
    status = 415
    code = "unsupported_media_type"


class ReportValidationError(GatewayError):
    status = 422
    code = "invalid_reports"

    def __init__(self, message: str, errors: list[FieldError]) -> None:
        super().__init__(message)
        self.errors = errors


class UnavailableError(GatewayError):
    status = 503
    code = "unavailable"
    retriable = True


class SaturatedError(UnavailableError):
    code = "saturated"


class ProduceTimeoutError(UnavailableError):
    code = "produce_timeout"


class BrokerDownError(UnavailableError):
    code = "broker_unreachable"


class ProduceFailedError(UnavailableError):
    code = "produce_failed"


def produce_failure(error: BaseException) -> GatewayError:
    """The 503 for a delivery that resolved to ``error`` (a GatewayError stays itself).

    Kafka's errors go through ``footfall.kafka.broker_error``: an outcome-unknown failure
    (the request left, its answer was lost) says the reports may be stored once; every
    other failure names the Kafka error.
    """
    if isinstance(error, GatewayError):
        return error
    broker = broker_error(error)
    if isinstance(broker, BrokerOutcomeUnknownError):
        return ProduceFailedError(
            "the connection to Kafka broke before it confirmed the reports; they may be stored once, "
            "and were not sent again: retry to be sure"
        )
    return ProduceFailedError(f"Kafka did not acknowledge the reports ({broker.kafka_error}); retry later")


def _codes(cls: type[GatewayError]) -> set[str]:
    return {cls.code}.union(*(_codes(sub) for sub in cls.__subclasses__()))


#: Every ``code`` a request can be answered with (``reports_rejected_total`` shows each, from zero).
REJECTION_CODES: tuple[str, ...] = tuple(sorted(_codes(GatewayError) - {GatewayError.code}))
