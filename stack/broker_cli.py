"""``footfall broker``: run the embedded broker in the foreground until Ctrl+C.

Exit codes: 0 after Ctrl+C/SIGTERM stopped it; 1 the broker did not start (port in use,
no binary) or died while running, said in one line naming the cause and its log; 2 bad flags.
"""

from __future__ import annotations

import sys
from typing import Annotated

import msgspec

from footfall.logs import configure_logging
from footfall.settings import LogLevel
from stack.broker import EmbeddedBroker
from stack.command import command, run_in_foreground

__all__ = ["BrokerSettings", "main"]


class BrokerSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: Annotated[str, msgspec.Meta(description="address to listen on")] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="Kafka port (0: a free one)")] = 9092
    log_level: Annotated[LogLevel, msgspec.Meta(description="log level (JSON lines on stderr)")] = "info"


def run(settings: BrokerSettings) -> int:
    configure_logging(settings.log_level, "broker")
    with EmbeddedBroker(settings.host, settings.port or None) as broker:
        print(f"embedded broker on {broker.bootstrap} (pid {broker.pid}); Ctrl+C stops it", file=sys.stderr)
        pid = broker.pid

        def death() -> str | None:
            code = broker.returncode
            if code is None:
                return None
            return f"the embedded broker (pid {pid}) exited with code {code}; log: {broker.log_path}"

        return run_in_foreground(death)


main = command(
    BrokerSettings,
    run,
    prog="footfall broker",
    description="Run the embedded Kafka-protocol broker (Tansu 0.6, memory storage) until Ctrl+C.",
    env_prefix="FOOTFALL_BROKER_",
)
