"""Exceptions shared by every Footfall process.

Hierarchy::

    FootfallError            root of everything Footfall raises on purpose (exit code 1)
    ├── ConfigError          a flag, env var or file setting is invalid (exit code 2)
    ├── StartupError         the machine refused what the settings ask: port in use,
    │                        directory read-only or full (exit code 1)
    ├── ReportError          a report failed to decode or validate
    └── BrokerError          the Kafka cluster is unreachable or refused an operation
        └── BrokerUnavailableError   retriable: try again later

Policy lives in class attributes (``retriable``, ``exit_code``), never in message text.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
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


class BrokerUnavailableError(BrokerError):
    """The Kafka cluster cannot be reached now; the operation may succeed later."""

    retriable = True
