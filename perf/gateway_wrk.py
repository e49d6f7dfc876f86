"""Gateway vs references under wrk, in one run, on this machine (a benchmark, not a test).

Targets, each with the same Sanic worker count, loaded in turn by wrk (closed loop, fixed
connections) posting the original client's request (12 visits, gzip'd JSON array):

- ``bare``: perf/references/bare_sanic.py, reads the body and answers 200 (the ceiling);
- ``gateway``: ``python -m gateway`` (batched produce, acks=all, embedded broker);
- ``per-report``: ``python -m perf.references.per_report`` (the gateway with ``send()`` per report, then gather).

Repeats are interleaved (bare, gateway, per-report, bare, ...) and medians reported, because
these machines are noisy. CPU per request is read from /proc/<pid>/stat (utime+stime) of each
target's process tree and of the broker, before and after each run. Then the gateway is
driven at ~80% of its own median maximum with a rate-limited wrk (a per-connection lua
``delay()`` calibrated to the target rate) to read its p99 there.

Run from the repository root::

    PYTHONPATH=. python perf/gateway_wrk.py --duration 10 --repeats 3 --json /tmp/gateway_wrk.json

Before/after in one run: ``--baseline DIR`` adds a ``baseline`` target running ``python -m gateway``
from DIR (a copy of the older ``gateway/`` and ``footfall/``), interleaved with the others.
``--command NAME=ARGV`` adds any server (e.g. the gateway over a fake producer) and ``--delay-ms D``
offers every target about the same rate (CPU per request falls as batches grow with the rate).

(A little over 400 lines: one benchmark; its targets, the interleaved repeats and the report
share one run's state.)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from footfall.generator import DEFAULT_START_DATE, day_start_ms, original_visits, user_id
from stack.broker import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
REPORTS_PER_REQUEST = 12

_LUA = """
local f = io.open("{body}", "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Content-Encoding"] = "gzip"
local pause = 0
function init(args) if args[1] then pause = tonumber(args[1]) end end
function delay() return pause end
"""


@dataclass
class Run:
    target: str
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int
    server_cpu_s: float
    broker_cpu_s: float
    delay_ms: float = 0.0
    rejected: dict[str, float] = field(default_factory=dict)

    @property
    def server_us_per_request(self) -> float:
        return self.server_cpu_s / max(1, self.requests) * 1e6

    @property
    def broker_us_per_request(self) -> float:
        return self.broker_cpu_s / max(1, self.requests) * 1e6


@dataclass
class Target:
    name: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    #: PYTHONPATH of the target (default: this checkout); a snapshot of older code for before/after runs.
    root: Path = ROOT
    runs: list[Run] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and all its descendants (seconds)."""
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    stack.extend(int(c) for c in (task / "children").read_text().split())
    return total


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m[2]]


def _parse_wrk(out: str) -> dict[str, Any]:
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": float(rps[1]) if rps else 0.0,
        "requests": int(reqs[1]) if reqs else 0,
        "p50_ms": pct.get(50, float("nan")),
        "p90_ms": pct.get(90, float("nan")),
        "p99_ms": pct.get(99, float("nan")),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "errors": sum(map(int, errors.groups())) if errors else 0,
    }


def _wait_ready(target: Target, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert target.proc is not None and target.proc.poll() is None, f"{target.name} exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(target.url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{target.name} not ready within {timeout}s")


@contextlib.contextmanager
def _running(targets: Sequence[Target], log_dir: Path) -> Iterator[None]:
    try:
        for t in targets:
            env = {**os.environ, "PYTHONPATH": str(t.root)}
            with (log_dir / f"{t.name}.log").open("wb") as log:
                t.proc = subprocess.Popen(t.argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=t.root)
        for t in targets:
            _wait_ready(t)
        yield
    finally:
        for t in targets:
            if t.proc is not None and t.proc.poll() is None:
                t.proc.send_signal(signal.SIGTERM)
        for t in targets:
            if t.proc is not None:
                try:
                    t.proc.wait(30)
                except subprocess.TimeoutExpired:
                    t.proc.kill()


def _rejected(target: Target) -> dict[str, float]:
    """footfall_gateway_reports_rejected_total by reason (empty for the bare reference)."""
    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(target.url + "/metrics", timeout=5).text
        for m in re.finditer(r'^footfall_gateway_reports_rejected_total\{.*reason="([^"]+)".*\} (\S+)$', text, re.M):
            out[m[1]] = out.get(m[1], 0.0) + float(m[2])
    return out


def _wrk(
    target: Target,
    script: Path,
    args: argparse.Namespace,
    duration: float,
    broker_pid: int,
    delay_ms: float = 0.0,
    connections: int | None = None,
) -> Run:
    assert target.proc is not None
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{connections or args.connections}",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(script),
        target.url + "/api/visit/v1",
    ]
    if delay_ms:
        cmd += ["--", f"{delay_ms:.3f}"]
    rejected0 = _rejected(target) if target.name != "bare" else {}
    server0, broker0 = _cpu_seconds(target.proc.pid), _cpu_seconds(broker_pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    server1, broker1 = _cpu_seconds(target.proc.pid), _cpu_seconds(broker_pid)
    parsed = _parse_wrk(out)
    rejected: dict[str, float] = {}
    if parsed["non_2xx"] and target.name != "bare":
        time.sleep(1.2)  # worker metric snapshots land every second
        rejected1 = _rejected(target)
        rejected = {k: v - rejected0.get(k, 0.0) for k, v in rejected1.items() if v - rejected0.get(k, 0.0)}
    return Run(
        target=target.name,
        server_cpu_s=server1 - server0,
        broker_cpu_s=broker1 - broker0,
        delay_ms=delay_ms,
        rejected=rejected,
        **parsed,
    )


def _median(runs: Sequence[Run], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in runs))


def _rate_limited(target: Target, script: Path, args: argparse.Namespace, broker_pid: int, rate: float) -> Run:
    """Calibrate a per-connection delay so wrk offers about ``rate`` req/s, then measure."""
    delay = args.connections / rate * 1000.0  # ignores latency: a slight under-shoot to start from

    def adjust(run: Run) -> float:
        # per-connection cycle = delay + latency; keep the latency, scale the delay to hit the rate
        latency = max(0.0, args.connections / run.requests_per_s * 1000.0 - run.delay_ms)
        return float(max(0.05, args.connections / rate * 1000.0 - latency))

    for _ in range(4):
        probe = _wrk(target, script, args, 3, broker_pid, delay_ms=delay)
        if abs(probe.requests_per_s - rate) / rate < 0.03:
            break
        delay = adjust(probe)
    run = _wrk(target, script, args, args.duration, broker_pid, delay_ms=delay)
    if abs(run.requests_per_s - rate) / rate > 0.10:  # the machine's load changed meanwhile: once more
        run = _wrk(target, script, args, args.duration, broker_pid, delay_ms=adjust(run))
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--targets", default="bare,gateway,per-report")
    parser.add_argument("--no-rate", action="store_true", help="skip the 80%% rate-limited run")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="per-connection think time in every repeat: all targets offered about the same rate, so their "
        "CPU per request compares at equal batch sizes (CPU per request falls as the rate rises)",
    )
    parser.add_argument("--gateway-args", default="", help="extra flags for both gateway targets")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="another gateway target with extra flags, e.g. 'c2=--connections 2' (repeatable)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run a 'baseline' gateway target from DIR (a copy of older gateway/ and footfall/): "
        "before/after figures interleaved in one run",
    )
    parser.add_argument(
        "--command",
        action="append",
        default=[],
        metavar="NAME=ARGV",
        help="another target: any server command (gets --port P appended), e.g. a gateway with a fake producer",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the targets' and broker's logs")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="footfall-gateway-wrk-"))
    rng = random.Random(1)
    visits = original_visits(rng, user_id(rng), day_start_ms(DEFAULT_START_DATE, 0))
    body_path = work / "body.gz"
    body_path.write_bytes(gzip.compress(msgspec.json.encode(visits)))
    script = work / "post.lua"
    script.write_text(_LUA.format(body=body_path))

    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        py = sys.executable
        gateway_flags = [
            "--brokers",
            broker.bootstrap,
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            *args.gateway_args.split(),
        ]
        gateway = [py, "-m", "gateway", *gateway_flags]
        all_targets = {
            "bare": Target("bare", [py, "-m", "perf.references.bare_sanic", "--workers", str(args.workers)], 0),
            "gateway": Target("gateway", gateway, 0),
            "per-report": Target("per-report", [py, "-m", "perf.references.per_report", *gateway_flags], 0),
        }
        for variant in args.variant:
            name, _, extra = variant.partition("=")
            all_targets[name] = Target(name, [*gateway, *extra.split()], 0)
        if args.baseline is not None:
            all_targets["baseline"] = Target("baseline", list(gateway), 0, root=args.baseline.resolve())
        targets = [all_targets[name] for name in args.targets.split(",")]
        if args.baseline is not None and all_targets["baseline"] not in targets:
            targets.append(all_targets["baseline"])
        targets += [all_targets[v.partition("=")[0]] for v in args.variant]
        for command in args.command:
            name, _, command_line = command.partition("=")
            all_targets[name] = Target(name, [py, *command_line.split()], 0)
            targets.append(all_targets[name])
        for t in targets:
            t.port = free_port()
            t.argv += ["--port", str(t.port)]
        with _running(targets, work):
            for t in targets:
                _wrk(t, script, args, args.warmup, broker.pid)
            for i in range(args.repeats):
                for t in targets:
                    run = _wrk(t, script, args, args.duration, broker.pid, delay_ms=args.delay_ms)
                    t.runs.append(run)
                    print(
                        f"[{i + 1}/{args.repeats}] {t.name:<10} {run.requests_per_s:9.0f} req/s  "
                        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  non-2xx {run.non_2xx}  "
                        f"cpu/req server {run.server_us_per_request:5.0f} us "
                        f"broker {run.broker_us_per_request:5.0f} us"
                        + (f"  rejected {run.rejected}" if run.rejected else ""),
                        flush=True,
                    )
            at_80: Run | None = None
            if not args.no_rate and "gateway" in all_targets and all_targets["gateway"] in targets:
                gw = all_targets["gateway"]
                rate = 0.8 * _median(gw.runs, "requests_per_s")
                at_80 = _rate_limited(gw, script, args, broker.pid, rate)
                print(
                    f"[80%] gateway target {rate:.0f} req/s: got {at_80.requests_per_s:.0f} req/s "
                    f"p50 {at_80.p50_ms:.2f} ms p99 {at_80.p99_ms:.2f} ms (delay {at_80.delay_ms:.2f} ms/conn)"
                )

    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary: dict[str, Any] = {"settings": settings, "targets": {}}
    bare_rps = _median(all_targets["bare"].runs, "requests_per_s") if all_targets["bare"].runs else float("nan")
    print(
        "\n| target | req/s (median) | reports/s | × bare | p50 ms | p99 ms | non-2xx | server CPU µs/req "
        "| broker CPU µs/req |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        rps = _median(t.runs, "requests_per_s")
        row = {
            "requests_per_s": rps,
            "reports_per_s": rps * REPORTS_PER_REQUEST,
            "ratio_to_bare": rps / bare_rps,
            "p50_ms": _median(t.runs, "p50_ms"),
            "p99_ms": _median(t.runs, "p99_ms"),
            "non_2xx": sum(r.non_2xx for r in t.runs),
            "server_us_per_request": _median(t.runs, "server_us_per_request"),
            "broker_us_per_request": _median(t.runs, "broker_us_per_request"),
            "runs": [asdict(r) for r in t.runs],
        }
        summary["targets"][t.name] = row
        print(
            f"| {t.name} | {rps:.0f} | {rps * REPORTS_PER_REQUEST:.0f} | {row['ratio_to_bare']:.2f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['non_2xx']} | {row['server_us_per_request']:.0f} | "
            f"{row['broker_us_per_request']:.0f} |"
        )
    if "gateway" in summary["targets"] and "per-report" in summary["targets"]:
        ratio = summary["targets"]["gateway"]["requests_per_s"] / summary["targets"]["per-report"]["requests_per_s"]
        summary["gateway_over_per_report"] = ratio
        print(f"\ngateway / per-report: {ratio:.2f}x")
    # Per-repeat ratios (targets run back to back): less exposed to the machine's load drifting.
    for other in ("bare", "per-report"):
        if "gateway" in summary["targets"] and other in summary["targets"]:
            pairs = [
                g.requests_per_s / o.requests_per_s
                for g, o in zip(all_targets["gateway"].runs, all_targets[other].runs, strict=True)
            ]
            summary[f"gateway_over_{other}_per_repeat"] = pairs
            print(
                f"gateway / {other} per repeat: {', '.join(f'{r:.2f}' for r in pairs)} "
                f"(median {statistics.median(pairs):.2f}x)"
            )
    # CPU-bound capacity of the two cores: 2 s of CPU per second / (server + broker CPU per request).
    for name, row in summary["targets"].items():
        row["cpu_capacity_req_per_s"] = 2e6 / (row["server_us_per_request"] + row["broker_us_per_request"])
        print(f"{name}: CPU capacity of 2 cores ~{row['cpu_capacity_req_per_s']:.0f} req/s (wrk's own CPU excluded)")
    if at_80 is not None:
        summary["gateway_at_80_percent"] = asdict(at_80)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if args.keep_logs:
        print(f"\nlogs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
