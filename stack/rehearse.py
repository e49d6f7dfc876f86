"""``footfall rehearse``: the compose deployment, run for real as local processes on loopback.

It starts what :class:`stack.rehearsal.Rehearsal` starts (Kafka nodes, gateways behind
HAProxy, sinks, dashboard, Prometheus), prints where everything is, drives the compose
``bench`` through the balancer, runs until ``--duration`` or Ctrl+C, then drains in the
reverse order (bench, gateways, sinks land the rest, the others), runs ``bench verify`` and
prints ``verify: lost=… duplicated=…``. ``--measure-json`` also writes what the run cost
(:mod:`stack.measure`).

Exit codes are ``footfall up``'s: 0 everything stopped cleanly and verify found nothing
wrong, 1 a process died or stopped uncleanly (or the bench wrote no run file), 2 bad flags,
3 start-up failed, 4 verify found lost, duplicated, unexpected, corrupt, altered, misplaced
or out-of-order reports, 130 Ctrl+C during start-up (after stopping what had started) or a
second Ctrl+C.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from footfall.errors import FootfallError, StartupError
from stack.command import EXIT_INTERRUPTED, Interrupts, command
from stack.measure import ResourceSampler, measure
from stack.rehearsal import Rehearsal, verify_count
from stack.topology import HOST, RehearsalConfig
from stack.up import EXIT_DATA_LOSS, EXIT_FAILED, EXIT_OK, EXIT_STARTUP

__all__ = ["RehearseSettings", "main", "run"]

#: What the closing ``verify:`` line shows, in this order.
_VERIFY_KEYS = ("lost", "duplicated", "unexpected", "corrupt", "altered", "misplaced", "out_of_order", "acknowledged")


class RehearseSettings(msgspec.Struct, frozen=True, kw_only=True):
    record_directory: Annotated[
        str, msgspec.Meta(description="where the sinks land reports (a fresh directory for a clean verify)")
    ] = "footfall-rehearsal/records"
    run_directory: Annotated[
        str,
        msgspec.Meta(description="logs, generated configs, Kafka's and Prometheus' data (default: beside the records)"),
    ] = ""
    duration: Annotated[float, msgspec.Meta(ge=0, description="stop after this many seconds (0: until Ctrl+C)")] = 0.0
    kafka: Annotated[
        Literal["apache", "embedded"],
        msgspec.Meta(
            description="apache: three KRaft nodes as in kafka/docker-compose.yml; embedded: one memory-only broker"
        ),
    ] = "apache"
    kafka_heap: Annotated[str, msgspec.Meta(description="JVM heap per Kafka node (compose: 1g)")] = "512m"
    bench: Annotated[bool, msgspec.Meta(description="drive the compose bench through the balancer")] = True
    concurrent_clients: Annotated[
        int, msgspec.Meta(ge=0, description="bench clients (0: the compose file's --concurrent-clients)")
    ] = 0
    prometheus: Annotated[
        bool, msgspec.Meta(description="run Prometheus with deploy/prometheus.yml and its alerts")
    ] = True
    scrape_interval: Annotated[
        str, msgspec.Meta(description="Prometheus scrape/evaluation interval (compose: 15s)")
    ] = "2s"
    gateways: Annotated[int, msgspec.Meta(ge=0, description="gateway replicas (0: the compose file's)")] = 0
    sinks: Annotated[int, msgspec.Meta(ge=0, description="sink instances (0: the compose file's)")] = 0
    report_interval: Annotated[
        float,
        msgspec.Meta(description="seconds between a bench client's days; 0 = closed loop (-1: the compose file's)"),
    ] = -1.0
    measure_json: Annotated[
        str,
        msgspec.Meta(description="write throughput, e2e latency, CPU and peak RSS per role of the bench run here"),
    ] = ""


def _status_line(rehearsal: Rehearsal) -> str:
    return f"accepted {rehearsal.accepted():>12,.0f}   landed {rehearsal.landed():>12,.0f}"


def _print_where(r: Rehearsal, records: Path) -> None:
    assert r.brokers is not None
    pids = " ".join(str(r.brokers.pid(n)) for n in r.brokers.node_ids)
    kind = "Apache Kafka KRaft" if r.config.kafka == "apache" else "embedded, memory only"
    print(f"  kafka        {r.brokers.bootstrap}  ({kind}, pids {pids})")
    print(f"  gateway-lb   {r.ingest_url}/api/visit/v1   http://{HOST}:{r.ports['gateway-lb-admin']}/stats")
    for name in r.names("gateway"):
        print(f"  {name:<12} {r.url(name)}/metrics")
    for name in r.names("sink"):
        print(f"  {name:<12} {r.url(name)}/metrics")
    if "dashboard" in r.processes:
        print(f"  dashboard    {r.url('dashboard')}/")
    if "prometheus" in r.processes:
        print(f"  prometheus   {r.url('prometheus')}/alerts")
    print(f"  records      {records}")
    print(f"  logs         {r.log_directory}")


def run(settings: RehearseSettings) -> int:
    """Run ``footfall rehearse``; returns one of the exit codes in the module docstring."""
    records = Path(settings.record_directory).resolve()
    run_directory = Path(settings.run_directory).resolve() if settings.run_directory else records.parent / "run"
    config = RehearsalConfig(
        run_directory=run_directory,
        record_directory=records,
        kafka=settings.kafka,
        kafka_heap=settings.kafka_heap,
        prometheus=settings.prometheus,
        scrape_interval=settings.scrape_interval,
        gateways=settings.gateways or None,
        sinks=settings.sinks or None,
    )
    rehearsal = Rehearsal(config)
    print(
        f"footfall rehearse: {len(rehearsal.deployment.kafka)} Kafka nodes, {rehearsal.gateway_count} gateways "
        f"behind haproxy, {rehearsal.sink_count} sinks, dashboard, prometheus ...",
        flush=True,
    )
    with Interrupts() as interrupts:
        try:
            rehearsal.start()
            interrupts.started()
            return _rehearse(rehearsal, settings, interrupts, run_directory / f"bench-{int(time.time())}.json")
        except KeyboardInterrupt:
            during = "start-up" if interrupts.starting else "the drain (a second Ctrl+C)"
            rehearsal.stop(timeout=5.0)
            print(f"\nfootfall rehearse: interrupted during {during}; stopped what had started", file=sys.stderr)
            return EXIT_INTERRUPTED
        except StartupError as exc:
            print(f"\nfootfall rehearse: {exc}", file=sys.stderr)
            return EXIT_STARTUP
        except FootfallError as exc:
            print(f"\nfootfall rehearse failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            rehearsal.stop(timeout=5.0)


def _rehearse(rehearsal: Rehearsal, settings: RehearseSettings, interrupts: Interrupts, run_json: Path) -> int:
    """The started deployment: bench, watch, drain, verify; an exit code."""
    bench: subprocess.Popen[bytes] | None = None
    sampler: ResourceSampler | None = None
    bench_started = 0.0
    healthy = True
    _print_where(rehearsal, rehearsal.record_directory)
    if settings.bench:
        overrides: dict[str, str | None] = {"--duration": str(settings.duration), "--quiet": None}
        if settings.concurrent_clients:
            overrides["--concurrent-clients"] = str(settings.concurrent_clients)
        if settings.report_interval >= 0:
            overrides["--report-interval"] = str(settings.report_interval)
        sampler = ResourceSampler(rehearsal.group_leaders).start() if settings.measure_json else None
        bench_started = time.monotonic()
        bench = rehearsal.start_bench(run_json, overrides)
        print(f"  bench        through gateway-lb; {run_json}")
    print("Ctrl+C drains and stops everything.", flush=True)
    started = last_shown = time.monotonic()
    tty = sys.stdout.isatty()  # rewrite the line in place on a terminal; plain lines in a log
    while not interrupts.stop.wait(1.0):
        if tty:
            print(f"\r  {_status_line(rehearsal)}", end="", flush=True)
        elif time.monotonic() - last_shown >= 5.0:
            print(f"  {_status_line(rehearsal)}", flush=True)
            last_shown = time.monotonic()
        died = {n: c for n, c in rehearsal.exited().items() if n != "bench"}
        if died:
            print(f"\nexited on their own: {died}; logs in {rehearsal.log_directory}")
            healthy = False
            break
        # The bench stops itself after --duration (and then writes its ledger); without one, stop here.
        grace = 0.0 if bench is None else 120.0
        if settings.duration and time.monotonic() - started >= settings.duration + grace:
            break
        if bench is not None and bench.poll() is not None:
            break
    print("\nstopping: bench, gateways (drain), sinks (land the rest), the others, Kafka ...", flush=True)
    if bench is not None:
        if bench.poll() is None:
            bench.send_signal(signal.SIGINT)  # the bench's own graceful stop: finish, write the ledger
            with contextlib.suppress(subprocess.TimeoutExpired):
                bench.wait(60.0)
        code = rehearsal.stop_process("bench", 10.0)
        healthy &= code in (0, None)
    if bench is not None and run_json.exists():
        if sampler is not None:
            measure(rehearsal, sampler, run_json, bench_started, Path(settings.measure_json))
        rehearsal.wait_verified(run_json, timeout=60.0)
        rehearsal.wait_counters_settled(timeout=5.0)
    final = _status_line(rehearsal)
    codes = rehearsal.stop()
    print(f"  {final}")
    print("  exit codes: " + ", ".join(f"{name}={code}" for name, code in codes.items()))
    healthy &= all(code == 0 for code in codes.values())
    if bench is None or not run_json.exists():
        print("verify: skipped (no bench run: --bench drives a load and checks it)")
        return EXIT_OK if healthy and bench is None else EXIT_FAILED
    result = rehearsal.verify(run_json)
    print("verify: " + " ".join(f"{key}={verify_count(result, key)}" for key in _VERIFY_KEYS))
    if result.get("ok") is not True:
        return EXIT_DATA_LOSS
    return EXIT_OK if healthy else EXIT_FAILED


main = command(
    RehearseSettings,
    run,
    prog="footfall rehearse",
    description="Run the compose deployment (docker-compose.yml, kafka/docker-compose.yml) as local "
    "processes on loopback: Kafka nodes, gateways behind haproxy, sinks, dashboard, prometheus, "
    "and a bench load; then verify what landed.",
    env_prefix="FOOTFALL_REHEARSE_",
)
