"""``footfall up``: the whole pipeline on loopback, with a modest bench load, until Ctrl+C.

1. start the embedded broker (or use ``--brokers``), the gateway, the sink and the dashboard;
2. print where everything is;
3. run the bench against the gateway and show, every second, reports accepted and landed;
4. on Ctrl+C (or after ``--duration``): stop the bench, drain the gateway, let the sink
   land what is left, stop everything, run ``bench verify`` and print a summary.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from footfall.errors import FootfallError
from footfall.settings import parse_settings, run_main
from stack.processes import Stack, StackConfig

__all__ = ["UpSettings", "main"]


class UpSettings(msgspec.Struct, frozen=True, kw_only=True):
    record_directory: Annotated[str, msgspec.Meta(description="where the sink lands reports")] = "footfall-data"
    brokers: Annotated[
        str,
        msgspec.Meta(
            description="use this Kafka cluster instead of the embedded broker", extra={"env": "FOOTFALL_BROKERS"}
        ),
    ] = ""
    gateway_port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="gateway HTTP port (0: a free one)")] = 8080
    sink_port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="sink /metrics port (0: a free one)")] = 9100
    dashboard_port: Annotated[int, msgspec.Meta(ge=0, le=65535, description="dashboard port (0: a free one)")] = 8050
    gateway_workers: Annotated[int, msgspec.Meta(ge=1, description="gateway worker processes")] = 2
    sink_workers: Annotated[int, msgspec.Meta(ge=1, description="sink worker processes")] = 2
    partitions: Annotated[int, msgspec.Meta(ge=1, description="partitions per topic")] = 4
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
    except OSError as exc:
        return f"(metrics unavailable: {exc})"


def run(settings: UpSettings) -> int:
    records = Path(settings.record_directory).resolve()
    logs = Path(settings.log_directory) if settings.log_directory else records / "_footfall" / "logs"
    config = StackConfig(
        record_directory=records,
        brokers=settings.brokers or None,
        partitions=settings.partitions,
        gateway_workers=settings.gateway_workers,
        sink_workers=settings.sink_workers,
        log_directory=logs,
        ports={"gateway": settings.gateway_port, "sink": settings.sink_port, "dashboard": settings.dashboard_port},
    )
    stop = threading.Event()
    interrupts = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt  # second Ctrl+C: stop waiting politely
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("footfall up: starting broker, gateway, sink, dashboard ...", flush=True)
    stack = Stack(config)
    bench: subprocess.Popen[bytes] | None = None
    run_json = logs / f"bench-{int(time.time())}.json"
    try:
        stack.start()
        embedded = f"  (embedded, memory only, pid {stack.broker.pid})" if stack.broker else ""
        print(f"  broker     {stack.bootstrap}{embedded}")
        print(f"  gateway    {stack.gateway_url}/api/visit/v1   {stack.gateway_url}/metrics")
        print(f"  sink       {stack.sink_url}/metrics")
        print(f"  dashboard  {stack.dashboard_url}/")
        print(f"  records    {records}")
        print(f"  logs       {logs}")
        if settings.bench:
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
            with (logs / "bench.log").open("ab") as bench_log:
                bench = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    stack.bench_command(*args),
                    stdout=bench_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=stack.child_env(),
                )
            print(f"  bench      {settings.concurrent_clients} clients, one day each per {settings.report_interval:g}s")
        print("Ctrl+C stops everything.", flush=True)
        started = time.monotonic()
        while not stop.wait(1.0):
            print(f"\r  {_line(stack)}", end="", flush=True)
            if settings.duration and time.monotonic() - started >= settings.duration:
                break
            if bench is not None and bench.poll() is not None:
                print(f"\nbench exited with code {bench.returncode}; see {logs / 'bench.log'}")
                break
        print("\nstopping: bench, then gateway (drain), then sink (land the rest) ...", flush=True)
        if bench is not None and bench.poll() is None:
            bench.send_signal(signal.SIGINT)
            try:
                bench.wait(30)
            except subprocess.TimeoutExpired:
                bench.kill()
        with contextlib.suppress(OSError):
            stack.wait_landed(timeout=15.0)
        final = _line(stack)
        codes = stack.stop()
        print(f"  {final}")
        print("  exit codes: " + ", ".join(f"{role}={code}" for role, code in codes.items()))
        if bench is not None and run_json.exists():
            verify = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "bench", "verify", str(run_json), "--record-directory", str(records)],
                capture_output=True,
                text=True,
                check=False,
                env=stack.child_env(),
            )
            print("  verify: " + (verify.stdout.strip().splitlines() or ["(no output)"])[-1])
        return 0
    except FootfallError as exc:
        print(f"\nfootfall up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        stack.stop(timeout=5.0)


def main(argv: Sequence[str] | None = None) -> int:
    """``footfall up`` entry point."""

    def go() -> int:
        settings = parse_settings(
            UpSettings,
            argv,
            prog="footfall up",
            description="Run the whole pipeline on loopback (embedded Kafka broker, gateway, sink, dashboard) "
            "with a bench load, until Ctrl+C.",
            env_prefix="FOOTFALL_UP_",
        )
        return run(settings)

    return run_main(go)
