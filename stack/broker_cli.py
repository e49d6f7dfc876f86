"""``footfall broker``: run the embedded broker in the foreground until Ctrl+C.

Exit codes: 0 after Ctrl+C/SIGTERM stopped it; 1 the broker did not start (port in use,
no binary) or died while running, said in one line naming the cause and its log; 2 bad flags.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from footfall.logs import configure_logging
from footfall.settings import parse_settings, run_main
from stack.broker import EmbeddedBroker

__all__ = ["BrokerSettings", "main"]

_POLL_S: Final = 0.5  # how soon a dead broker ends the command


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
            pid = broker.pid
            while not stop.wait(_POLL_S):
                code = broker.returncode
                if code is not None:
                    print(
                        f"error: the embedded broker (pid {pid}) exited with code {code}; log: {broker.log_path}",
                        file=sys.stderr,
                    )
                    return 1
        return 0

    return run_main(run)
