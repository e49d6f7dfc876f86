"""The ``footfall`` command: one entry point that dispatches to each role's ``main``.

Roles are imported only when their subcommand runs, so ``footfall --help`` is instant
and one role's dependencies never slow another's start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["main"]

#: subcommand -> (module with ``main(argv) -> int``, one-line summary)
COMMANDS: Final = {
    "up": ("stack.up", "run broker, gateway, sink, dashboard and a bench load together on loopback"),
    "gateway": ("gateway.__main__", "HTTP ingestion: POST reports, answered after Kafka acknowledged them"),
    "sink": ("sink.__main__", "Kafka -> append-only files, exactly once"),
    "bench": ("bench.__main__", "load generator; 'footfall bench verify' checks what landed"),
    "dashboard": ("dashboard.__main__", "web page with charts over the landed files"),
    "broker": ("stack.broker_cli", "run the embedded Kafka-protocol broker (Tansu) alone"),
    "kafka": ("stack.kafka_cli", "run Apache Kafka (one node or a KRaft cluster) on loopback; needs Java + Maven"),
    "perf": ("perf.__main__", "end-to-end performance scenarios and profiles"),
    "rehearse": ("stack.rehearse", "run the compose deployment as local processes (Kafka x3, haproxy, Prometheus)"),
}


#: The extras of pyproject.toml a command needs beyond the base install, and modules that show each is there.
EXTRAS: Final = {"bench": ("hdrh", "rich"), "dashboard": ("duckdb",), "dev": ("yaml",)}
_NEEDS: Final = {
    "up": ("bench", "dashboard"),
    "rehearse": ("bench", "dashboard", "dev"),
    "perf": ("bench", "dashboard", "dev"),
    "bench": ("bench",),
    "dashboard": ("dashboard",),
}
#: Commands that run from a source checkout only, and the file of the checkout they need.
_CHECKOUT_ONLY: Final = {"perf": "perf/__init__.py", "rehearse": "docker-compose.yml"}
_ROOT: Final = Path(__file__).resolve().parents[1]


def _not_installed(command: str, root: Path = _ROOT) -> str | None:
    """Why ``command`` cannot run in this installation (one line), or None."""
    needed = _CHECKOUT_ONLY.get(command)
    if needed is not None and not (root / needed).is_file():
        return (
            f"footfall {command} runs from a source checkout ({needed} is not part of the package): "
            f"run bash scripts/setup.sh there, then .venv/bin/footfall {command}"
        )
    for extra in _NEEDS.get(command, ()):
        absent = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
        if absent:
            return (
                f"footfall {command} needs the extra '{extra}' ({', '.join(absent)} not installed): "
                f"pip install 'footfall[{extra}]' (scripts/setup.sh installs every extra)"
            )
    return None


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: footfall COMMAND [options]   (footfall COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``footfall COMMAND [options]``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        from footfall import __version__

        print(f"footfall {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"footfall: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if (missing := _not_installed(command)) is not None:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    module = importlib.import_module(COMMANDS[command][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
