"""``footfall up``: the whole pipeline on loopback, with a modest bench load, until Ctrl+C.

1. start the embedded broker (or use ``--brokers``), the gateway, the sink and the dashboard;
2. print where everything is;
3. run the bench against the gateway and show, every second, reports accepted and landed;
4. on Ctrl+C (or after ``--duration``): stop the bench, drain the gateway, let the sink
   land what is left, stop everything, run ``bench verify`` and print a summary.

It supervises what it starts: a role that exits, never becomes ready, or finds its port
held by a server it did not start fails the command at once with one line (role, port or
cause, log file); a role that dies while running stops the run the same way.

Exit codes (also in the README):

====  ==========================================================================
0     every process stopped cleanly and ``bench verify`` found nothing wrong
1     a process died or stopped uncleanly, the bench failed, or verify could not run
2     bad flags
3     start-up failed: a port in use, a directory not writable, a role that did not start
4     data loss: ``bench verify`` found lost, duplicated or unexpected reports
130   Ctrl+C during start-up (after stopping what had started), or a second Ctrl+C
      while draining
====  ==========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from bench.verify import ERROR_COUNTERS
from footfall.errors import ConfigError, FootfallError, StartupError
from footfall.kafka import cluster_size, parse_brokers, topic_partitions, wait_for_broker
from footfall.preflight import check_directory, claim
from stack.children import interrupt
from stack.command import EXIT_INTERRUPTED, Interrupts, command
from stack.kafka import KafkaCluster
from stack.processes import Stack, StackConfig

__all__ = ["EXIT_DATA_LOSS", "EXIT_FAILED", "EXIT_FLAGS", "EXIT_OK", "EXIT_STARTUP", "UpSettings", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_FLAGS: Final = 2  # argparse's code for a bad flag; the same for a bad value found after parsing
EXIT_STARTUP: Final = 3
EXIT_DATA_LOSS: Final = 4

_PORT_FLAGS: Final = {"gateway": "--gateway-port", "sink": "--sink-port", "dashboard": "--dashboard-port"}
_PLAIN_PROGRESS_S: Final = 5.0  # a count line this often when stdout is not a terminal


class UpSettings(msgspec.Struct, frozen=True, kw_only=True):
    record_directory: Annotated[str, msgspec.Meta(description="where the sink lands reports")] = "footfall-data"
    brokers: Annotated[
        str,
        msgspec.Meta(
            description="use this Kafka cluster instead of the embedded broker", extra={"env": "FOOTFALL_BROKERS"}
        ),
    ] = ""
    kafka: Annotated[
        bool,
        msgspec.Meta(
            description="run one Apache Kafka node (needs Java and Maven; logs in <record-directory>/_footfall/kafka) "
            "instead of the embedded broker"
        ),
    ] = False
    gateway_port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="gateway HTTP port (0: a free one)")] = 8080
    sink_port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="sink /metrics port (0: a free one)")] = 9100
    dashboard_port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="dashboard port (0: a free one)")] = 8050
    gateway_workers: Annotated[int, msgspec.Meta(ge=1, description="gateway worker processes")] = 2
    sink_workers: Annotated[int, msgspec.Meta(ge=1, description="sink worker processes")] = 2
    partitions: Annotated[int, msgspec.Meta(ge=1, description="partitions per topic")] = 4
    replication_factor: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=32,
            description="replication factor of the topics it creates (0: 3, or the brokers there are if fewer)",
        ),
    ] = 0
    bench: Annotated[bool, msgspec.Meta(description="drive a bench load against the gateway")] = True
    concurrent_clients: Annotated[int, msgspec.Meta(ge=1, description="bench clients")] = 50
    report_interval: Annotated[float, msgspec.Meta(ge=0, description="seconds between a bench client's days")] = 1.0
    profile: Annotated[Literal["original", "realistic"], msgspec.Meta(description="bench data profile")] = "realistic"
    duration: Annotated[float, msgspec.Meta(ge=0, description="stop after this many seconds (0: until Ctrl+C)")] = 0.0
    log_directory: Annotated[
        str, msgspec.Meta(description="where each process logs (default: <record-directory>/_footfall/logs)")
    ] = ""


def _line(stack: Stack) -> str:
    try:
        return f"accepted {stack.accepted():>12,.0f}   landed {stack.landed():>12,.0f}"
    except OSError as exc:  # words, not "<urlopen error [Errno 111] ...>"
        reason = getattr(exc, "reason", exc)
        return f"(metrics unavailable: {getattr(reason, 'strerror', None) or reason})"


def _flag_error(settings: UpSettings) -> str | None:
    """What is wrong with flags that parse but cannot work, before anything starts."""
    if not settings.record_directory.strip():
        return "--record-directory is empty; give a directory (default: footfall-data)"
    if settings.kafka and settings.brokers:
        return "--kafka starts its own Kafka; give it or --brokers, not both"
    if settings.brokers:
        try:
            parse_brokers(settings.brokers)
        except ConfigError as exc:
            return str(exc)
    return None


def _claim(records: Path) -> int:
    """Take ``<records>/_footfall/up.lock`` for this run; the open descriptor holds it.

    Two ``footfall up`` on one directory would fight over the sink's partition locks, the
    dashboard's database and the log files; the second one stops here, before it starts anything.

    Raises:
        StartupError: another process holds the lock.
    """
    return claim(
        records / "_footfall" / "up.lock",
        f"--record-directory: another footfall up ({{who}}) is using {records}; "
        "stop it, or give this one another --record-directory",
    )


def run(settings: UpSettings) -> int:
    """Run ``footfall up``; returns one of the exit codes in the module docstring."""
    flag_error = _flag_error(settings)
    if flag_error:
        print(f"footfall up: {flag_error}", file=sys.stderr)
        return EXIT_FLAGS
    # up speaks to its user in its own lines; the Kafka client's log lines (a refused connection
    # while it waits for --brokers) are not for them.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    records = Path(settings.record_directory).resolve()
    logs = Path(settings.log_directory).resolve() if settings.log_directory else records / "_footfall" / "logs"
    try:
        check_directory(records, "--record-directory")
        check_directory(logs, "--log-directory")
        _claim(records)  # the descriptor stays open (and the lock held) until this process exits
    except StartupError as exc:
        print(f"footfall up: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    kafka = KafkaCluster(1, records / "_footfall" / "kafka") if settings.kafka else None
    stack: Stack | None = None
    bench: subprocess.Popen[bytes] | None = None
    run_json = logs / f"bench-{int(time.time())}.json"
    with Interrupts() as interrupts:
        try:
            try:  # start-up: the broker, a port, a role
                if kafka is not None:
                    print("footfall up: starting Apache Kafka (one node) ...", flush=True)
                    kafka.start()
                brokers = kafka.bootstrap if kafka is not None else settings.brokers or None
                replication = ["--replication-factor", str(_replication_factor(settings, brokers))]
                stack = Stack(
                    StackConfig(
                        record_directory=records,
                        brokers=brokers,
                        gateway_args=replication,
                        sink_args=replication,
                        partitions=settings.partitions,
                        gateway_workers=settings.gateway_workers,
                        sink_workers=settings.sink_workers,
                        log_directory=logs,
                        ports={
                            "gateway": settings.gateway_port,
                            "sink": settings.sink_port,
                            "dashboard": settings.dashboard_port,
                        },
                        port_flags=_PORT_FLAGS,
                    )
                )
                roles = "gateway, sink, dashboard" if brokers else "broker, gateway, sink, dashboard"
                print(f"footfall up: starting {roles} ...", flush=True)
                stack.start()
            except FootfallError as exc:
                print(f"footfall up: {exc}", file=sys.stderr)
                return EXIT_STARTUP
            interrupts.started()
            _print_where(stack, records, logs, kafka)
            partitions = _partitions(stack)
            if settings.bench:
                bench = _start_bench(stack, settings, run_json, logs / "bench.log")
            print("Ctrl+C stops everything.", flush=True)
            failed = _watch(stack, bench, settings, interrupts.stop)
            failed = _stop(stack, bench, logs / "bench.log") or failed
            if bench is None:
                return EXIT_FAILED if failed else EXIT_OK
            verified = _verify(stack, run_json, records, logs / "bench.log", partitions)
            return verified if verified != EXIT_OK else EXIT_FAILED if failed else EXIT_OK
        except KeyboardInterrupt:
            during = "start-up" if interrupts.starting else "the drain (a second Ctrl+C)"
            _stop_all(stack, bench, kafka)
            print(f"\nfootfall up: interrupted during {during}; stopped what had started", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            _stop_all(stack, bench, kafka)


def _stop_all(stack: Stack | None, bench: subprocess.Popen[bytes] | None, kafka: KafkaCluster | None) -> None:
    """Stop at once whatever is still running (idempotent)."""
    if bench is not None and bench.poll() is None:
        bench.kill()
        bench.wait()
    if stack is not None:
        stack.stop(timeout=5.0)
    if kafka is not None:
        kafka.stop()


def _print_where(stack: Stack, records: Path, logs: Path, kafka: KafkaCluster | None) -> None:
    if stack.broker:
        what = f"  (embedded, memory only, pid {stack.broker.pid})"
    elif kafka is not None:
        what = f"  (Apache Kafka, one node, pid {kafka.pid(1)}, data in {kafka.data_dir})"
    else:
        what = "  (--brokers)"
    print(f"  broker     {stack.bootstrap}{what}")
    print(f"  gateway    {stack.gateway_url}/api/visit/v1   {stack.gateway_url}/metrics")
    print(f"  sink       {stack.sink_url}/metrics")
    print(f"  dashboard  {stack.dashboard_url}/")
    print(f"  records    {records}")
    print(f"  logs       {logs}")


#: How long ``up`` waits for a ``--brokers`` cluster to answer (the gateway's default --startup-timeout).
_BROKER_WAIT_S: Final = 30.0


def _replication_factor(settings: UpSettings, brokers: str | None) -> int:
    """``--replication-factor``, or by default 3 (as kafka/docker-compose.yml), capped at the brokers there are.

    Raises:
        BrokerUnavailableError: ``brokers`` cannot be reached (asked only for the default).
    """
    if settings.replication_factor:
        return settings.replication_factor
    if brokers is None:
        return 1  # the embedded broker: one node

    async def size() -> int:
        await wait_for_broker(brokers, _BROKER_WAIT_S)  # a cluster still starting: as the gateway would wait
        return await cluster_size(brokers)

    return max(1, min(3, asyncio.run(size())))


def _partitions(stack: Stack) -> int | None:
    """The topics' partition count for ``bench verify`` (None: they differ, verify reads the sink's state).

    Topics that already existed keep their count whatever ``--partitions`` says; say so, since the
    record directory's earlier runs may have used another one.
    """
    c = stack.config
    try:
        counts = asyncio.run(topic_partitions(stack.bootstrap, [c.visit_topic, c.activity_topic]))
    except FootfallError as exc:
        print(f"footfall up: {exc}; bench verify will read the partition count from the sink's state", file=sys.stderr)
        return None
    for topic, count in counts.items():
        if count != c.partitions:
            print(f"  note       topic {topic} has {count} partitions (it existed; --partitions is for new ones)")
    found = set(counts.values())
    return found.pop() if len(found) == 1 else None


def _start_bench(stack: Stack, settings: UpSettings, run_json: Path, log_path: Path) -> subprocess.Popen[bytes]:
    args = [
        "--concurrent-clients",
        str(settings.concurrent_clients),
        "--report-interval",
        str(settings.report_interval),
        "--profile",
        settings.profile,
        "--json",
        str(run_json),
        "--quiet",
    ]
    with log_path.open("ab") as bench_log:
        bench = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            stack.bench_command(*args),
            stdout=bench_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=stack.child_env(),
        )
    pace = f"one day each per {settings.report_interval:g}s" if settings.report_interval else "closed loop"
    print(f"  bench      {settings.concurrent_clients} clients, {pace}")
    return bench


def _stop(stack: Stack, bench: subprocess.Popen[bytes] | None, bench_log: Path) -> bool:
    """Stop in order: bench, gateway (drain), sink (land the rest); True if any stopped uncleanly."""
    first = "bench, then gateway" if bench is not None else "gateway"
    print(f"stopping: {first} (drain), then sink (land the rest) ...", flush=True)
    unclean: dict[str, int | None] = {}
    if bench is not None and interrupt(bench, 30.0) != 0:
        unclean["bench"] = bench.returncode
    if "sink" not in stack.exited():
        with contextlib.suppress(OSError):
            stack.wait_landed(timeout=15.0)
    final = _line(stack)
    codes = stack.stop()
    print(f"  {final}")
    print("  exit codes: " + ", ".join(f"{role}={code}" for role, code in codes.items()))
    unclean |= {role: code for role, code in codes.items() if code != 0}
    for role, code in unclean.items():
        where = bench_log if role == "bench" else stack.log_path(role)
        print(f"footfall up: {role} stopped with exit code {code}; log: {where}", file=sys.stderr)
    return bool(unclean)


#: What ``bench verify`` counts as an error besides ``unexpected`` (a report no bench run sent).
_ERRORS_BUT_UNEXPECTED: Final = tuple(name for name in ERROR_COUNTERS if name != "unexpected")


def _verify(stack: Stack, run_json: Path, records: Path, bench_log: Path, partitions: int | None) -> int:
    """Run ``bench verify`` over what landed; EXIT_OK, EXIT_DATA_LOSS, or EXIT_FAILED if it could not run.

    ``partitions``: the count this run's topics had. Without it verify takes the most the sink's
    state shows, which an earlier run on more partitions leaves behind (then this run's reports
    would all look misplaced).
    """
    if not run_json.exists():
        print(f"footfall up: the bench wrote no run file, nothing to verify; log: {bench_log}", file=sys.stderr)
        return EXIT_FAILED
    count = ["--partitions", str(partitions)] if partitions else []
    verify = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench", "verify", str(run_json), "--record-directory", str(records), *count],
        capture_output=True,
        text=True,
        check=False,
        env=stack.child_env(),
    )
    last = (verify.stdout.strip().splitlines() or verify.stderr.strip().splitlines() or ["(no output)"])[-1]
    print(f"  verify: {last}", flush=True)
    if verify.returncode == 1:
        counts = {k: int(v.replace(",", "")) for k, v in re.findall(r"\b(\w+)=([\d,]+)", last)}
        if counts.get("lost") and stack.config.brokers is None:
            print(
                "footfall up: reports the sink had not landed lived only in the embedded broker, which keeps "
                "them in memory and lost them when it stopped; use --kafka (durable logs) to keep them",
                file=sys.stderr,
            )
        elif counts.get("unexpected") and not any(counts.get(k) for k in _ERRORS_BUT_UNEXPECTED):
            print(
                f"footfall up: nothing of this run was lost or duplicated, but {records} holds reports no bench "
                "sent (unexpected: another producer, a report sent by hand, or damage); give footfall up a "
                "fresh --record-directory for a clean check",
                file=sys.stderr,
            )
        print(
            f"footfall up: the samples: footfall bench verify {run_json} --record-directory {records}", file=sys.stderr
        )
        return EXIT_DATA_LOSS
    return EXIT_OK if verify.returncode == 0 else EXIT_FAILED


def _watch(
    stack: Stack,
    bench: subprocess.Popen[bytes] | None,
    settings: UpSettings,
    stop: threading.Event,
) -> bool:
    """Show the count until Ctrl+C, ``--duration`` or a death; True if a process died.

    On a terminal the count line is rewritten in place; elsewhere (a pipe, a log file) it
    is a plain line every few seconds, without carriage returns.
    """
    tty = sys.stdout.isatty()
    started = last_shown = time.monotonic()
    try:
        while not stop.wait(1.0):
            dead = stack.exited()
            if dead:
                role, code = next(iter(dead.items()))
                print(
                    f"\nfootfall up: {role} exited with code {code} while running; log: {stack.log_path(role)}",
                    file=sys.stderr,
                    flush=True,
                )
                return True
            now = time.monotonic()
            if tty:
                print(f"\r  {_line(stack)}", end="", flush=True)
            elif now - last_shown >= _PLAIN_PROGRESS_S:
                print(f"  {_line(stack)}", flush=True)
                last_shown = now
            if settings.duration and now - started >= settings.duration:
                break
            if bench is not None and bench.poll() is not None:
                break  # its exit code is judged by the caller
        return False
    finally:
        if tty:
            print()


main = command(
    UpSettings,
    run,
    prog="footfall up",
    description="Run the whole pipeline on loopback (embedded Kafka broker, gateway, sink, dashboard) "
    "with a bench load, until Ctrl+C.",
    env_prefix="FOOTFALL_UP_",
)
