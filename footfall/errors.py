"""Exceptions shared by every Footfall process.

Hierarchy::

    FootfallError            root of everything Footfall raises on purpose
    ├── ConfigError          a flag, env var or file setting is invalid (exit code 2)
    ├── ReportError          a report failed to decode or validate
    └── BrokerError          the Kafka cluster is unreachable or refused an operation
        └── BrokerUnavailableError   retriable: try again later

Policy lives in class attributes (``retriable``), never in message text.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailableError",
    "ConfigError",
    "FootfallError",
    "ReportError",
]


class FootfallError(Exception):
    """Root of every exception Footfall raises on purpose."""

    retriable: bool = False


class ConfigError(FootfallError):
    """A setting is invalid. The message names the flag and says what to do."""


class ReportError(FootfallError):
    """A report could not be decoded or failed validation."""


class BrokerError(FootfallError):
    """The Kafka cluster refused or failed an operation."""


class BrokerUnavailableError(BrokerError):
    """The Kafka cluster cannot be reached now; the operation may succeed later."""

    retriable = True
