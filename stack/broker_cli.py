"""``footfall broker``: run the embedded broker in the foreground until Ctrl+C."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from typing import Annotated

import msgspec

from footfall.logs import configure_logging
from footfall.settings import parse_settings, run_main
from stack.broker import EmbeddedBroker

__all__ = ["BrokerSettings", "main"]


class BrokerSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: Annotated[str, msgspec.Meta(description="address to listen on")] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="Kafka port (0: a free one)")] = 9092
    log_level: Annotated[str, msgspec.Meta(description="debug|info|warning|error")] = "info"


def main(argv: Sequence[str] | None = None) -> int:
    def run() -> int:
        settings = parse_settings(
            BrokerSettings,
            argv,
            prog="footfall broker",
            description="Run the embedded Kafka-protocol broker (Tansu 0.6, memory storage) until Ctrl+C.",
            env_prefix="FOOTFALL_BROKER_",
        )
        configure_logging(settings.log_level, "broker")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        with EmbeddedBroker(settings.host, settings.port or None) as broker:
            print(f"embedded broker on {broker.bootstrap} (pid {broker.pid}); Ctrl+C stops it", file=sys.stderr)
            stop.wait()
        return 0

    return run_main(run)
