"""Exceptions shared by every Footfall process.

Hierarchy::

    FootfallError            root of everything Footfall raises on purpose (exit code 1)
    ├── ConfigError          a flag, env var or file setting is invalid (exit code 2)
    ├── StartupError         the machine refused what the settings ask: port in use,
    │                        directory read-only or full (exit code 1)
    ├── ReportError          a report failed to decode or validate
    ├── BrokerError          the Kafka cluster is unreachable or refused an operation
    │   └── BrokerUnavailableError   retriable: try again later
    │       └── BrokerOutcomeUnknownError  the request reached the broker, its answer was lost:
    │                         the records may be stored once (not sent again)
    └── GatewayError         an HTTP answer of the gateway (``gateway/errors.py`` draws its tree)

Policy lives in class attributes (``retriable``, ``exit_code``), never in message text.
Errors of the Kafka client become ``BrokerError``s in one place: ``footfall.kafka.broker_error``.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerOutcomeUnknownError",
    "BrokerUnavailableError",
    "ConfigError",
    "FootfallError",
    "ReportError",
    "StartupError",
]


class FootfallError(Exception):
    """Root of every exception Footfall raises on purpose."""

    retriable: bool = False
    #: what a command exits with when this error ends it (see ``footfall.settings.run_main``)
    exit_code: int = 1


class ConfigError(FootfallError):
    """A setting is invalid. The message names the flag and says what to do."""

    exit_code = 2


class StartupError(FootfallError):
    """The machine refused what valid settings ask for (a port in use, a read-only or full
    directory). The message names the flag or path and says what to do."""


class ReportError(FootfallError):
    """A report could not be decoded or failed validation."""


class BrokerError(FootfallError):
    """The Kafka cluster refused or failed an operation."""

    #: the Kafka client's error class name when translated from one (the word logs and metrics use)
    kafka_error: str = ""


class BrokerUnavailableError(BrokerError):
    """The Kafka cluster cannot be reached now; the operation may succeed later."""

    retriable = True


class BrokerOutcomeUnknownError(BrokerUnavailableError):
    """The request left for the broker and its answer was lost: it may or may not be stored.

    Not sent again (that could store it twice); the client that sent the records decides.
    """
