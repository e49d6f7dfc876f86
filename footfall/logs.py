"""JSON logs: one object per line with time, level, logger, message and context fields.

Context goes in ``extra=``: ``log.info("flushed", extra={"tp": "visit[3]", "offset": 42})``.
Call :func:`configure_logging` once per process (again in each spawned child).

Libraries repeat themselves when a broker is unreachable (aiokafka logs every failed
connect, several a second): :class:`RepeatFilter` lets the first such line through and
then one per interval carrying ``repeated`` = how many were held back meanwhile.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

import orjson

__all__ = ["JsonFormatter", "RepeatFilter", "configure_logging"]

#: Loggers whose repeated lines are rate-limited; Footfall's own lines are never held back.
RATE_LIMITED: Final = ("aiokafka", "kafka")

# Attributes every LogRecord has; anything else came from ``extra=`` and is context.
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "role": self.role,
            "pid": record.process,
        }
        entry.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RepeatFilter(logging.Filter):
    """Pass a library's repeated line once per ``interval`` seconds, with a count.

    Lines are "the same" when logger, level and message template match (the arguments —
    a node id, an address, an errno — may differ). The first passes at once; the next one
    after ``interval`` passes with ``repeated`` = the lines dropped in between, so a dead
    broker costs one line per interval instead of hundreds.
    """

    def __init__(
        self,
        interval: float = 10.0,
        prefixes: tuple[str, ...] = RATE_LIMITED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.prefixes = prefixes
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (last passed, held back)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if not any(name == p or name.startswith(p + ".") for p in self.prefixes):
            return True
        key = (name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.repeated = last[1]
            record.repeated_within_s = self.interval
        return True


def configure_logging(level: str = "info", role: str = "footfall", stream: TextIO | None = None) -> None:
    """Send every logger's records, as JSON lines, to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(role))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries are chatty at info; their warnings still come through.
    for noisy in ("aiokafka", "kafka", "sanic.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
