"""``python -m perf profile gateway|sink --seconds S``: where a service spends its CPU under load.

1. start a stack (embedded broker, gateway, sink; no dashboard) on loopback;
2. start the bench (closed loop, or ``--rate``) and wait until the gateway has accepted
   reports, so the recording sees steady state rather than start-up;
3. record the chosen service's process and all its workers (``py-spy record --subprocesses``)
   for ``--seconds``, twice at once: a flame graph SVG and a speedscope JSON;
4. stop the bench, stop the stack;
5. sum the speedscope samples into a table of the top functions by own ("self") time, with
   their inclusive ("total") time, print it and write it next to the SVG.

Reading the SVG: the x axis is the share of samples (not time order), each box a
function, its parent below it; wide boxes at the top are where the CPU goes. Idle threads
(waiting in ``epoll``) are left out by py-spy, so 100 % is "CPU the service used".
``--nonblocking`` (default) samples without pausing the target: less distortion, at the
price of an occasional torn stack.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from footfall.errors import FootfallError
from perf.results import timestamp
from perf.settings import ProfileSettings
from stack.children import interrupt
from stack.processes import Stack, StackConfig

__all__ = ["FunctionTime", "by_package", "format_top", "run", "top_functions"]

_ROOT: Final = Path(__file__).resolve().parents[1]
_WARMUP_TIMEOUT: Final = 60.0


class FunctionTime:
    """Samples attributed to one function (all its lines, all processes)."""

    __slots__ = ("file", "name", "own", "total")

    def __init__(self, name: str, file: str) -> None:
        self.name = name
        self.file = file
        self.own = 0.0
        self.total = 0.0


def _short(file: str) -> str:
    """``.../site-packages/sanic/http/http1.py`` -> ``sanic/http/http1.py``; own files relative to the repo."""
    for marker in ("site-packages/", "lib/python3.11/", str(_ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def top_functions(speedscope: Mapping[str, Any]) -> tuple[list[FunctionTime], float]:
    """Own and total samples per function over every profile (process/thread) of a py-spy speedscope file.

    Returns the functions sorted by own time, and the total sample weight (py-spy weighs each sample
    ``1 / rate`` seconds: thread-seconds running or runnable; idle threads are not sampled, but a thread
    waiting for a busy CPU is).
    """
    frames = speedscope["shared"]["frames"]
    keys = [(f.get("name", "?"), _short(f.get("file", "?"))) for f in frames]
    table: dict[tuple[str, str], FunctionTime] = {}
    grand = 0.0

    def entry(key: tuple[str, str]) -> FunctionTime:
        found = table.get(key)
        if found is None:
            found = table[key] = FunctionTime(*key)
        return found

    for profile in speedscope.get("profiles", []):
        samples = profile.get("samples", [])
        weights = profile.get("weights") or [1.0] * len(samples)
        for stack, weight in zip(samples, weights, strict=False):
            if not stack:
                continue
            grand += weight
            entry(keys[stack[-1]]).own += weight  # speedscope stacks run root -> leaf
            for key in {keys[i] for i in stack}:
                entry(key).total += weight
    return sorted(table.values(), key=lambda f: (-f.own, -f.total, f.name)), grand


def format_top(functions: list[FunctionTime], grand: float, n: int) -> str:
    """A markdown table of the ``n`` functions with the most own time."""
    lines = ["| own % | total % | function | file |", "|---:|---:|---|---|"]
    for f in functions[:n]:
        own = 100 * f.own / grand if grand else 0.0
        total = 100 * f.total / grand if grand else 0.0
        lines.append(f"| {own:.1f} | {total:.1f} | `{f.name}` | {f.file} |")
    return "\n".join(lines)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise FootfallError("py-spy is not installed: pip install py-spy")
    return found


def _wait_accepting(stack: Stack, bench: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _WARMUP_TIMEOUT
    while time.monotonic() < deadline:
        if bench.poll() is not None:
            raise FootfallError(f"the bench exited with {bench.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if stack.accepted() > 0:
                return
        time.sleep(0.1)
    raise FootfallError("the gateway accepted nothing within the warm-up deadline")


def run(settings: ProfileSettings) -> int:
    """Profile one service; see the module docstring."""
    s = settings
    out = Path(s.output_directory or _ROOT / "perf" / "profiles")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{timestamp()}-{s.service}"
    svg, speedscope, summary = out / f"{stem}.svg", out / f"{stem}.speedscope.json", out / f"{stem}.md"
    work = Path(tempfile.mkdtemp(prefix="footfall-profile-"))
    config = StackConfig(
        record_directory=work / "records",
        log_directory=work / "logs",
        dashboard=False,
        partitions=s.partitions,
        gateway_workers=s.gateway_workers,
        sink_workers=s.sink_workers,
        gateway_args=("--log-level", s.log_level),
        sink_args=("--log-level", s.log_level),
    )
    py_spy = _py_spy()
    load = ["--rate", f"{s.rate:g}"] if s.rate > 0 else ["--report-interval", "0"]
    bench_log = work / "bench.log"
    try:
        with Stack(config) as stack:
            print(
                f"perf profile: stack up; loading it ({' '.join(load)}, {s.concurrent_clients} clients)",
                file=sys.stderr,
            )
            with bench_log.open("ab") as log:
                bench = subprocess.Popen(
                    stack.bench_command(
                        "--concurrent-clients",
                        str(s.concurrent_clients),
                        *load,
                        "--quiet",
                        "--max-error-rate",
                        "1",
                        "--json",
                        str(work / "run.json"),
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "PYTHONPATH": str(_ROOT)},
                )
            try:
                _wait_accepting(stack, bench, bench_log)
                accepted_before = stack.accepted()
                pid = stack.processes[s.service].pid
                common = ["record", "--pid", str(pid), "--subprocesses", "--duration", f"{s.seconds:g}"]
                common += ["--rate", str(s.sampling_rate)] + (["--nonblocking"] if s.nonblocking else [])
                print(
                    f"perf profile: recording {s.service} (pid {pid} and its workers) for {s.seconds:g} s",
                    file=sys.stderr,
                )
                recorders = [
                    subprocess.Popen(
                        [py_spy, *common, "--format", fmt, "--output", str(path)],
                        stdout=subprocess.DEVNULL,
                        stderr=(work / f"py-spy-{fmt}.log").open("ab"),
                    )
                    for fmt, path in (("flamegraph", svg), ("speedscope", speedscope))
                ]
                started = time.monotonic()
                codes = [r.wait(s.seconds + 60) for r in recorders]
                elapsed = time.monotonic() - started
                accepted = stack.accepted() - accepted_before
            finally:
                interrupt(bench, 30.0)
        if any(codes) or not speedscope.exists():
            logs = "\n".join((work / f"py-spy-{f}.log").read_text()[-1000:] for f in ("flamegraph", "speedscope"))
            raise FootfallError(f"py-spy failed (exit codes {codes}):\n{logs}")
        functions, grand = top_functions(orjson.loads(speedscope.read_bytes()))
        table = format_top(functions, grand, s.top)
        text = "\n".join(
            [
                f"## py-spy profile of the {s.service} — {stem}",
                "",
                f"`python -m perf profile {s.service} --seconds {s.seconds:g}"
                + (f" --rate {s.rate:g}" if s.rate else "")
                + f"` — {s.gateway_workers} gateway workers, {s.sink_workers} sink workers, {s.partitions} partitions, "
                f"bench {' '.join(load)} with {s.concurrent_clients} clients; "
                f"{accepted / elapsed:,.0f} reports/s accepted while recording; "
                f"{grand:,.1f} active thread-seconds sampled at {s.sampling_rate}/s over {s.seconds:g} s"
                + (" (nonblocking)" if s.nonblocking else ""),
                "",
                f"Flame graph: `{svg}`  ",
                f"Speedscope: `{speedscope}` (open in https://www.speedscope.app)",
                "",
                f"Top {s.top} functions by own time (all processes of the {s.service}; 100 % = its CPU samples):",
                "",
                table,
                "",
                "Own time by package (stdlib modules by name):",
                "",
                by_package(functions, grand),
                "",
            ]
        )
        summary.write_text(text)
        print(text)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def by_package(functions: list[FunctionTime], grand: float, n: int = 12) -> str:
    """A markdown table of own time per top-level package or stdlib module (``sanic``, ``gateway``, ``asyncio``…)."""
    own: dict[str, float] = collections.defaultdict(float)
    for f in functions:
        own[f.file.split("/", 1)[0].removesuffix(".py")] += f.own
    lines = ["| own % | package or module |", "|---:|---|"]
    for name, value in sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:n]:
        if grand and value / grand < 0.0005:
            break
        lines.append(f"| {100 * value / grand if grand else 0.0:.1f} | {name} |")
    return "\n".join(lines)
