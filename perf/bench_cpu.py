"""CPU per request: the bench against wrk, in the same run, against the same bare Sanic endpoint.

``python -m perf.bench_cpu [--duration 10] [--connections 50] [--processes 1] [--json OUT]``

1. Start the gateway engineer's bare Sanic endpoint (``perf/references/bare_sanic.py``: reads
   the body, answers 200), one worker, on a free port.
2. Run wrk (Debian package ``wrk``) with a Lua script POSTing one gzip'd original-profile day
   of visits (12 reports, ~750 bytes) to ``/api/visit/v1``, ``-t1 -c C -d D``.
3. Run the bench in closed-loop mode with the same connection count and duration.
4. Each client's CPU time (user + system) comes from ``wait4`` on its process (children
   included); per request = CPU / requests. The bench's interpreter start-up and imports
   are measured separately (a run with ``--requests 1``) and reported both ways.

Both clients and the server share this machine's cores, so the absolute rates say little;
the ratio of CPU per request is the figure (target: bench <= 3x wrk). The bench's capacity
on one core is estimated as 1 / (CPU per request).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.profiles import OriginalProfile, encode_body
from footfall.reports import ReportType

ROOT = Path(__file__).resolve().parents[1]

_LUA = """\
wrk.method = "POST"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Content-Encoding"] = "gzip"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the bare Sanic server exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the bare Sanic server did not listen on {port} within {timeout} s")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _run_measured(command: Sequence[str], timeout: float) -> tuple[int, float, str]:
    """Run to completion; (exit code, CPU seconds of the process and its children, output)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{command[0]} did not finish in {timeout} s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, usage.ru_utime + usage.ru_stime, out.read().decode(errors="replace")


_SERVER = "perf.references.bare_sanic"


def _wrk(url: str, connections: int, duration: float, body: Path, work: Path) -> dict[str, Any]:
    script = work / "post.lua"
    script.write_text(_LUA.format(body=body))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-s", str(script), url + "/api/visit/v1"]
    code, cpu, out = _run_measured(command, duration + 60)
    if code != 0:
        raise RuntimeError(f"wrk failed ({code}): {out}")
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m is None:
        raise RuntimeError(f"cannot parse wrk's output:\n{out}")
    requests = int(m[1])
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / requests * 1e6, 2),
    }


def _bench(url: str, connections: int, duration: float, processes: int, work: Path) -> dict[str, Any]:
    run_file = work / "run.json"
    base = [sys.executable, "-m", "bench", "--web-service", url, "--quiet", "--progress-interval", "3600"]
    base += ["--seed", "1", "--max-error-rate", "1", "--processes", str(processes)]
    # Start-up cost alone: interpreter, imports, one request.
    code, startup_cpu, out = _run_measured([*base, "--concurrent-clients", "1", "--requests", "1"], 60)
    if code != 0:
        raise RuntimeError(f"bench start-up run failed ({code}): {out}")
    command = [*base, "--concurrent-clients", str(connections), "--report-interval", "0"]
    command += ["--duration", f"{duration:g}", "--json", str(run_file)]
    code, cpu, out = _run_measured(command, duration + 60)
    if code != 0:
        raise RuntimeError(f"bench failed ({code}): {out}")
    run = json.loads(run_file.read_text())
    requests = run["counts"]["requests"]
    steady = max(cpu - startup_cpu, 1e-9)
    return {
        "requests": requests,
        "failed": run["counts"]["failed"],
        "requests_per_s": run["throughput"]["requests_per_s"],
        "latency_p50_ms": run["latency_ms"]["p50"],
        "latency_p99_ms": run["latency_ms"]["p99"],
        "cpu_s": round(cpu, 3),
        "startup_cpu_s": round(startup_cpu, 3),
        "cpu_us_per_request": round(cpu / requests * 1e6, 2),
        "cpu_us_per_request_steady": round(steady / requests * 1e6, 2),
        "capacity_requests_per_s_per_core": round(requests / steady),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; print a table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m perf.bench_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1, help="bench worker processes")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    module = _SERVER
    if importlib.util.find_spec(module) is None:
        print(f"error: {module} is missing (the gateway engineer's bare Sanic reference)", file=sys.stderr)
        return 2
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.server_workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        _wait_port(port, server)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            client = OriginalProfile(seed=1).client(0)
            body = work / "visits.json.gz"
            body.write_bytes(encode_body(client.reports(ReportType.VISIT, 0), gzip=True))
            body_bytes = body.stat().st_size
            wrk = _wrk(url, args.connections, args.duration, body, work)
            bench = _bench(url, args.connections, args.duration, args.processes, work)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    result = {
        "server": module,
        "connections": args.connections,
        "duration_s": args.duration,
        "bench_processes": args.processes,
        "body_bytes": body_bytes,
        "wrk": wrk,
        "bench": bench,
        "ratio_cpu_per_request": round(bench["cpu_us_per_request"] / wrk["cpu_us_per_request"], 2),
        "ratio_cpu_per_request_steady": round(bench["cpu_us_per_request_steady"] / wrk["cpu_us_per_request"], 2),
    }
    print(f"{'client':8} {'requests':>9} {'req/s':>9} {'CPU s':>7} {'µs CPU/req':>11} {'steady µs/req':>14}")
    print(
        f"{'wrk':8} {wrk['requests']:>9} {wrk['requests_per_s']:>9.0f} {wrk['cpu_s']:>7.2f} "
        f"{wrk['cpu_us_per_request']:>11.1f}"
    )
    print(
        f"{'bench':8} {bench['requests']:>9} {bench['requests_per_s']:>9.0f} {bench['cpu_s']:>7.2f} "
        f"{bench['cpu_us_per_request']:>11.1f} {bench['cpu_us_per_request_steady']:>14.1f}"
    )
    print(
        f"ratio bench/wrk CPU per request: {result['ratio_cpu_per_request']} "
        f"(steady state {result['ratio_cpu_per_request_steady']}); "
        f"bench capacity ~{bench['capacity_requests_per_s_per_core']} requests/s per core"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
