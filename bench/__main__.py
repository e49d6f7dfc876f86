"""``python -m bench [options]`` runs a load; ``python -m bench verify RUN.json --record-directory DIR`` checks it.

Exit codes: 0 success; 1 the run's error rate exceeded ``--max-error-rate``, a worker
process was lost, the web service was unreachable, or verify found lost, duplicated or
unexpected reports, or the ``--json`` file's directory is not writable; 2 bad flags or settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from footfall.settings import SettingsParser, run_main

__all__ = ["main"]

_RUN_DESCRIPTION = """\
Load generator for the Footfall gateway. Each simulated client has a userId and sends one
simulated day of visits and one of activities per request pair (gzip'd JSON arrays).

modes:
  ticking      --report-interval S (default 1): each client sends one day every S seconds
  closed loop  --report-interval 0: each client sends again as soon as a response came
  open model   --rate R: R requests/s on a fixed schedule; latency from the intended send time

Check delivery afterwards:  footfall bench verify RUN.json --record-directory DIR
"""

_VERIFY_DESCRIPTION = """\
Compare every report the bench sent (regenerated from RUN.json, written by 'bench --json')
with what landed in <DIR>/<topic>/date=*/*.jsonl: each acknowledged report exactly once,
byte-identical, in the partition its userId maps to, in order, in a date folder of the run.
Prints one line (lost=… duplicated=… unexpected=… altered=… misplaced=… out_of_order=…
foreign=… …) and exits 1 if any error counter is not zero; reports of other runs sharing
the directory are counted as foreign, not an error.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bench`` (or ``bench verify``) with ``argv``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "verify":
        return run_main(lambda: _verify(args[1:]))
    return run_main(lambda: _run(args))


def _run(argv: list[str]) -> int:
    from bench.errors import WebServiceError
    from bench.report import LiveProgress, error_rate, print_summary, summary, write_run_file
    from bench.runner import resolve_seed, run
    from bench.settings import ENV_PREFIX, BenchSettings
    from footfall.logs import configure_logging

    parser = SettingsParser(BenchSettings, prog="footfall bench", description=_RUN_DESCRIPTION, env_prefix=ENV_PREFIX)
    parser.parser.epilog = "subcommand:\n  verify RUN.json --record-directory DIR   (footfall bench verify --help)"
    settings: BenchSettings = parser.parse(argv)
    configure_logging(settings.log_level, "bench")
    if settings.json:  # the ledger is written at the end: a directory that refuses it must fail now
        from pathlib import Path

        from footfall.preflight import check_directory

        check_directory(Path(settings.json).resolve().parent, "--json")
    seed = resolve_seed(settings)
    print(f"bench: seed {seed} (--seed {seed} reproduces the data)", file=sys.stderr)
    live = LiveProgress(settings)

    async def go() -> int:
        try:
            result = await run(settings, seed, on_start=live.start)
        except WebServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            await live.stop()
        content = summary(result)
        if settings.json:
            write_run_file(settings.json, content)
        print_summary(content)
        rate = error_rate(result.totals)
        if result.workers_lost:
            print(f"error: {result.workers_lost} worker process(es) lost; the ledger is incomplete", file=sys.stderr)
            return 1
        if rate > settings.max_error_rate:
            print(
                f"error: error rate {rate:.4%} exceeds --max-error-rate {settings.max_error_rate:.4%}", file=sys.stderr
            )
            return 1
        return 0

    try:
        import uvloop

        return uvloop.run(go())
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.run(go())


def _verify(argv: list[str]) -> int:
    from bench.errors import RunFileError
    from bench.settings import ENV_PREFIX, VerifySettings
    from bench.verify import verify, write_result
    from footfall.errors import ConfigError

    parser = SettingsParser(
        VerifySettings, prog="footfall bench verify", description=_VERIFY_DESCRIPTION, env_prefix=ENV_PREFIX
    )
    parser.parser.add_argument("run_json", nargs="?", default=argparse.SUPPRESS, metavar="RUN.json")
    try:
        settings: VerifySettings = parser.parse(argv)
    except ConfigError as exc:
        if "run_json" not in str(exc):
            raise
        raise ConfigError(
            "RUN.json: name the run file written by 'bench --json' (positional, --run-json or FOOTFALL_BENCH_RUN_JSON)"
        ) from exc
    if settings.json:  # the result is written at the end: a directory that refuses it must fail now
        from pathlib import Path

        from footfall.preflight import check_directory

        check_directory(Path(settings.json).resolve().parent, "--json")
    try:
        result = verify(
            settings.run_json,
            settings.record_directory,
            visit_topic=settings.visit_topic,
            activity_topic=settings.activity_topic,
            partitions=settings.partitions,
        )
    except RunFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.line())
    if result.files == 0 and result.acknowledged:
        # Total loss and a wrong directory look the same in the counters: say which it may be.
        print(
            f"bench verify: no segment files under {settings.record_directory}; "
            "is it the sink's --record-directory (footfall up: footfall-data)?",
            file=sys.stderr,
        )
    if settings.json:
        write_result(settings.json, result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
