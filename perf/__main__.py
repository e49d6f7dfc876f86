"""``python -m perf COMMAND`` (also ``footfall perf COMMAND``).

Commands:
  e2e       the pipeline under bench load with same-run references (perf.e2e)
  profile   py-spy flame graph of the gateway or the sink under load (perf.profile)
  compare   compare the ratios of two results files (perf.compare)

and the roles' own scenarios, each ``main(argv)`` of a module written by that role's engineer
(run only when the module is there): ``soak`` (perf.soak), ``gateway-wrk`` (perf.gateway_wrk),
``sink-throughput`` (perf.sink_throughput), ``bench-cpu`` (perf.bench_cpu),
``dashboard-queries`` (perf.dashboard_queries).

Exit codes: 0 success; 1 verification found lost/duplicated/unexpected reports, a ratio
regressed beyond ``--threshold``, or a run failed; 2 bad flags.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec

from footfall.errors import FootfallError
from footfall.settings import SettingsParser, run_main

__all__ = ["main"]

S = TypeVar("S", bound=msgspec.Struct)

_COMMANDS = {
    "e2e": "the pipeline under bench load, with same-run references; writes perf/results/<timestamp>.json/.md",
    "profile": "py-spy flame graph (SVG + speedscope) of the gateway or the sink under bench load",
    "compare": "compare the ratios of two results files; exit 1 on a regression beyond --threshold",
}

#: command -> (module with ``main(argv) -> int``, summary): the roles' own scenarios.
_SCRIPTS = {
    "soak": ("perf.soak", "the pipeline at a fixed share of its maximum for minutes: is memory flat?"),
    "gateway-wrk": ("perf.gateway_wrk", "gateway vs bare Sanic vs per-report send(), under wrk"),
    "sink-throughput": ("perf.sink_throughput", "sink throughput from a pre-filled topic"),
    "bench-cpu": ("perf.bench_cpu", "the bench's CPU per request against wrk's"),
    "dashboard-queries": ("perf.dashboard_queries", "dashboard API latency over a large record directory"),
}


def _usage() -> str:
    lines = [
        "usage: footfall perf COMMAND [options]   (footfall perf COMMAND --help; also python -m perf)",
        "",
        "commands:",
    ]
    width = max(map(len, [*_COMMANDS, *_SCRIPTS]))
    lines += [f"  {name:<{width}}  {summary}" for name, summary in _COMMANDS.items()]
    lines += ["", "the roles' scenarios (footfall perf COMMAND --help):"]
    for name, (module, summary) in _SCRIPTS.items():
        missing = "" if importlib.util.find_spec(module) is not None else f"  ({module} is not there)"
        lines.append(f"  {name:<{width}}  {summary}{missing}")
    return "\n".join(lines)


def _positional(argv: list[str], *flags: str) -> list[str]:
    """Leading positional arguments become the given flags (``profile gateway`` -> ``--service gateway``)."""
    out: list[str] = []
    rest = list(argv)
    for flag in flags:
        if rest and not rest[0].startswith("-"):
            out += [flag, rest.pop(0)]
    return out + rest


def _parse(cls: type[S], command: str, description: str, env_prefix: str, argv: list[str]) -> S:
    parser = SettingsParser(cls, prog=f"python -m perf {command}", description=description, env_prefix=env_prefix)
    settings: S = parser.parse(argv)
    return settings


def _failing_in_one_line(command: str, run: Callable[[], int]) -> int:
    """``run()``; a FootfallError it raises is ``perf COMMAND failed: ...`` and exit 1."""
    try:
        return run()
    except FootfallError as exc:
        print(f"perf {command} failed: {exc}", file=sys.stderr)
        return 1


def _e2e(argv: list[str]) -> int:
    from perf.e2e import run
    from perf.settings import ENV_PREFIX, E2eSettings

    description = (
        "Run the pipeline (embedded broker, gateway, sink) under bench load: maximum rate, fixed rates, "
        "and the bare Sanic / librdkafka / per-report references in the same run. Verifies every phase."
    )
    settings = _parse(E2eSettings, "e2e", description, ENV_PREFIX, argv)
    return _failing_in_one_line("e2e", lambda: run(settings, argv))


def _profile(argv: list[str]) -> int:
    from perf.profile import run
    from perf.settings import ENV_PREFIX, ProfileSettings

    description = (
        "Record the gateway or the sink with py-spy while the bench loads the stack; writes a flame "
        "graph SVG and a speedscope JSON, prints the top functions by own time."
    )
    settings = _parse(ProfileSettings, "profile", description, ENV_PREFIX + "PROFILE_", _positional(argv, "--service"))
    return _failing_in_one_line("profile", lambda: run(settings))


def _compare(argv: list[str]) -> int:
    from perf.compare import compare_files, format_changes
    from perf.settings import ENV_PREFIX, CompareSettings

    description = "Compare the ratios of two perf e2e results files."
    settings = _parse(CompareSettings, "compare", description, ENV_PREFIX, _positional(argv, "--baseline", "--current"))
    changes = compare_files(Path(settings.baseline), Path(settings.current), settings.threshold)
    print(format_changes(changes, settings.baseline))
    return 1 if any(c.regressed for c in changes) else 0


def _script(command: str, argv: list[str]) -> int:
    module_name = _SCRIPTS[command][0]
    if importlib.util.find_spec(module_name) is None:
        print(f"perf {command}: {module_name.replace('.', '/')}.py is not there", file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    result: int = module.main(argv)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m perf COMMAND [options]``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    handlers = {"e2e": _e2e, "profile": _profile, "compare": _compare}
    if command in _SCRIPTS:
        return run_main(lambda: _script(command, rest))
    if command not in handlers:
        print(f"perf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_main(lambda: handlers[command](rest))


if __name__ == "__main__":
    raise SystemExit(main())
