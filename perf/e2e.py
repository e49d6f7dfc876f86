"""``python -m perf e2e``: the whole pipeline under bench load, with same-run references.

(Over 400 lines: one scenario, its phases share one runner's state; the reading of results
is in perf/results.py, the histograms in perf/prometheus.py, the /proc figures in perf/procstat.py.)

Each repeat runs, in this order:

1. the references (unless ``--skip-references``):
   a. ``bare_sanic`` — the gateway engineer's bare Sanic endpoint, same workers, same bench
      (the HTTP ceiling);
   b. ``kafka_produce`` / ``kafka_consume`` — librdkafka on a fresh embedded broker
      (:mod:`perf.references.kcat`, the Kafka ceiling);
2. ``max`` — a fresh stack (embedded broker, gateway, sink on loopback), the bench in a
   closed loop: the maximum rate;
3. ``rate25``, ``rate50``, ``rate80`` — a fresh stack each, the bench in the open model at that
   percentage of this repeat's maximum requests/s;
4. ``per_report`` — a fresh stack whose gateway sends one ``send()`` per report
   (:mod:`perf.references.per_report`), closed loop (a reference: what batching buys).

Every phase gets a fresh stack so that its records can be verified on their own (``bench
verify`` counts any report it cannot explain as unexpected) and no backlog carries over.
Per phase it measures: requests/s and reports/s acknowledged and their latency (from the
bench's run file), reports landed per second (landed reports over the time from the
bench's start to the last write into a segment file), end-to-end latency to the file (the
sink's histogram, before/after), CPU seconds per 1,000 reports of each process group
(:mod:`perf.procstat`; the bench exactly, by ``wait4``) and peak RSS.

At the end every phase's run file is verified against its records: a run that lost,
duplicated or invented a report fails (exit 1), however fast it was. Then the results
JSON and the markdown table are written (:mod:`perf.results`), and ``--compare`` checks
the ratios against a baseline (:mod:`perf.compare`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from footfall.errors import FootfallError
from footfall.layout import segment_files
from perf.compare import compare_files, format_changes
from perf.procstat import CpuTimes, RssSampler, wait_rusage
from perf.prometheus import bucket_bound, bucket_counts, histogram_quantile, share_at_most, subtract
from perf.results import (
    RESULTS_FORMAT,
    RESULTS_VERSION,
    machine,
    markdown,
    source_revision,
    summarize,
    timestamp,
    write_results,
)
from perf.settings import E2eSettings
from stack.broker import EmbeddedBroker, free_port
from stack.children import stop_process_group
from stack.processes import Stack, StackConfig

__all__ = ["Runner", "effective_settings", "run"]

_ROOT: Final = Path(__file__).resolve().parents[1]
_E2E_HISTOGRAM: Final = "footfall_sink_e2e_latency_seconds"
_KAFKA_REFERENCE_MAX_RECORDS: Final = 3_000_000  # the embedded broker keeps everything in memory
_QUICK_DURATION: Final = 1.5


def effective_settings(settings: E2eSettings) -> E2eSettings:
    """``--quick`` overrides: one repeat of short phases, fewer clients, the 50 % rate only."""
    if not settings.quick:
        return settings
    return msgspec.structs.replace(
        settings,
        duration=min(settings.duration, _QUICK_DURATION),
        repeats=1,
        concurrent_clients=min(settings.concurrent_clients, 16),
        rates=[50.0],
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    return env


def _say(message: str) -> None:
    print(f"perf e2e: {message}", file=sys.stderr, flush=True)


def _mb(value: float) -> float:
    return round(value / 1e6, 1)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else round(seconds * 1000, 1)


def _per_1k(cpu: Mapping[str, float | None], count: float) -> dict[str, float | None]:
    return {k: (None if v is None or count <= 0 else round(v / (count / 1000), 4)) for k, v in cpu.items()}


def _latest_write(records: Path) -> float | None:
    """Epoch seconds of the last write into a segment file (the sink's own state is under ``_footfall``)."""
    latest = None
    for path, _ in segment_files(records):
        with contextlib.suppress(OSError):
            mtime = path.stat().st_mtime
            latest = mtime if latest is None else max(latest, mtime)
    return latest


@dataclass
class _Phase:
    """What one phase needs to be verified afterwards."""

    repeat: int
    name: str
    run_file: Path
    records: Path
    seed: int


@dataclass
class Runner:
    """One ``perf e2e`` run; see the module docstring."""

    settings: E2eSettings
    work: Path
    phases: list[_Phase] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    # -- bench --------------------------------------------------------------------------------
    def _bench(
        self, url: str, args: Sequence[str], run_file: Path, seed: int, log: Path
    ) -> tuple[dict[str, Any], float, float, float]:
        """Run the bench to completion: (run file content, CPU s, max RSS bytes, epoch start)."""
        s = self.settings
        command = [
            sys.executable,
            "-m",
            "bench",
            "--web-service",
            url,
            *args,
            "--duration",
            f"{s.duration:g}",
            "--processes",
            str(s.bench_processes),
            "--seed",
            str(seed),
            "--max-error-rate",
            "1",
            "--json",
            str(run_file),
            "--quiet",
            "--progress-interval",
            "3600",
        ]
        started = time.time()
        with log.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
            try:
                code, cpu, rss = wait_rusage(proc, timeout=s.duration + 120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise FootfallError(f"the bench did not finish; see {log}") from None
        if code != 0 or not run_file.exists():
            raise FootfallError(f"the bench exited with code {code}; see {log}:\n{log.read_text()[-2000:]}")
        content = orjson.loads(run_file.read_bytes())
        with contextlib.suppress(KeyError, ValueError):
            started = dt.datetime.fromisoformat(content["started_at"]).timestamp()
        return content, cpu, rss, started

    # -- one phase on a fresh stack -----------------------------------------------------------
    def phase(
        self,
        repeat: int,
        name: str,
        bench_args: Sequence[str],
        *,
        offered: float | None = None,
        gateway_module: str = "gateway",
    ) -> dict[str, Any]:
        """Run one phase on a fresh stack (its gateway run as ``python -m gateway_module``); its figures."""
        s = self.settings
        seed = 1000 * (repeat + 1) + len(self.phases) + 1
        directory = self.work / f"r{repeat}-{name}"
        records = directory / "records"
        config = StackConfig(
            record_directory=records,
            log_directory=directory / "logs",
            dashboard=False,
            partitions=s.partitions,
            gateway_workers=s.gateway_workers,
            sink_workers=s.sink_workers,
            gateway_module=gateway_module,
            gateway_args=(*s.gateway_args, "--log-level", s.log_level),
            sink_args=(*s.sink_args, "--log-level", s.log_level),
        )
        run_file = directory / "run.json"
        with Stack(config) as stack:
            assert stack.broker is not None
            groups = {
                "gateway": stack.processes["gateway"].pid,
                "sink": stack.processes["sink"].pid,
                "broker": stack.broker.pid,
            }
            with RssSampler(groups) as sampler:
                histogram_before = bucket_counts(stack.metrics("sink"), _E2E_HISTOGRAM)
                landed_before = stack.landed()
                cpu_before = CpuTimes.take(groups)
                sampler.reset()
                run, bench_cpu, bench_rss, started = self._bench(
                    stack.gateway_url, bench_args, run_file, seed, directory / "bench.log"
                )
                bench_done = time.monotonic()
                acked = int(run["counts"]["reports_acked"])
                landed = self._wait_landed(stack, landed_before + acked) - landed_before
                drain_s = time.monotonic() - bench_done
                cpu = CpuTimes.take(groups) - cpu_before
                peaks = sampler.reset()
                histogram = subtract(bucket_counts(stack.metrics("sink"), _E2E_HISTOGRAM), histogram_before)
            self.phases.append(_Phase(repeat, name, run_file, records, seed))
        last_write = _latest_write(records)
        window = (last_write - started) if last_write is not None else None
        cpu_all: dict[str, float | None] = {**cpu, "bench": bench_cpu}
        p50, p99 = histogram_quantile(0.5, histogram), histogram_quantile(0.99, histogram)
        within_1s = share_at_most(1.0, histogram)
        lat, thr, counts = run["latency_ms"], run["throughput"], run["counts"]
        return {
            "offered_requests_per_s": None if offered is None else round(offered, 1),
            "requests_per_s": thr["requests_per_s"],
            "reports_per_s": thr["reports_per_s"],
            "landed_per_s": round(landed / window, 1) if window and window > 0 else None,
            "requests": counts["requests"],
            "failed_requests": counts["failed"],
            "reports_acked": acked,
            "reports_landed": landed,
            "latency_p50_ms": lat["p50"],
            "latency_p99_ms": lat["p99"],
            "latency_p999_ms": lat["p99.9"],
            "latency_max_ms": lat["max"],
            "e2e_p50_ms": _ms(p50),
            "e2e_p99_ms": _ms(p99),
            "e2e_p99_bucket_ms": _ms(bucket_bound(0.99, histogram)),
            "e2e_le_1s_pct": None if within_1s is None else round(100 * within_1s, 3),
            "e2e_samples": histogram.get(float("inf"), 0.0),
            "elapsed_s": run["elapsed_s"],
            "drain_s": round(drain_s, 2),
            "cpu_s": {k: None if v is None else round(v, 3) for k, v in cpu_all.items()},
            "cpu_s_per_1k_reports": _per_1k(cpu_all, acked),
            "peak_rss_mb": {**{k: _mb(v) for k, v in peaks.items()}, "bench": _mb(bench_rss)},
            "bench_seed": seed,
        }

    def _wait_landed(self, stack: Stack, target: float) -> float:
        """Wait until the sink has landed ``target`` records in all (and the gateway's count); returns landed."""
        deadline = time.monotonic() + max(60.0, 5 * self.settings.duration)
        landed = 0.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                landed = stack.landed()
                if landed >= max(target, stack.accepted()):
                    return landed
            time.sleep(0.05)
        _say(f"warning: the sink landed {landed:,.0f} of {target:,.0f} records before the deadline")
        return landed

    # -- references ---------------------------------------------------------------------------
    def bare_sanic(self, repeat: int) -> dict[str, Any] | None:
        """The bare Sanic endpoint under the same bench load as ``max``."""
        module = _bare_sanic_module()
        if module is None:
            self.skipped["bare_sanic"] = "neither perf/references/bare_sanic.py nor bare_sanic_bench.py is there"
            return None
        s = self.settings
        directory = self.work / f"r{repeat}-bare_sanic"
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--workers", str(s.gateway_workers)]
        with (directory / "server.log").open("ab") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        try:
            _wait_port(port, server, directory / "server.log")
            groups = {"server": server.pid}
            with RssSampler(groups) as sampler:
                cpu_before = CpuTimes.take(groups)
                run, bench_cpu, _rss, _started = self._bench(
                    f"http://127.0.0.1:{port}",
                    ["--concurrent-clients", str(s.concurrent_clients), "--report-interval", "0"],
                    directory / "run.json",
                    seed=1,
                    log=directory / "bench.log",
                )
                cpu = (CpuTimes.take(groups) - cpu_before)["server"]
                peak = sampler.reset()["server"]
        finally:
            stop_process_group(server, 10.0)
        requests = run["counts"]["requests"]
        return {
            "requests_per_s": run["throughput"]["requests_per_s"],
            "latency_p50_ms": run["latency_ms"]["p50"],
            "latency_p99_ms": run["latency_ms"]["p99"],
            "failed_requests": run["counts"]["failed"],
            "cpu_s": {"server": round(cpu, 3), "bench": round(bench_cpu, 3)},
            "cpu_s_per_1k": round(cpu / (requests / 1000), 4) if requests else None,
            "peak_rss_mb": _mb(peak),
            "note": f"{module.rsplit('.', 1)[1]}: server CPU s per 1k requests; same bench and workers as the gateway",
        }

    def kafka(self, repeat: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """librdkafka produce, then consume of what was produced, on a fresh embedded broker."""
        s = self.settings
        directory = self.work / f"r{repeat}-kafka"
        directory.mkdir(parents=True, exist_ok=True)
        topic = "perf-reference"
        with EmbeddedBroker(log_path=directory / "broker.log") as broker:
            from footfall.kafka import ensure_topics

            asyncio.run(ensure_topics(broker.bootstrap, [topic], s.partitions, 1))

            def kcat(mode: str, *extra: str) -> dict[str, Any]:
                groups = {"broker": broker.pid}
                command = [sys.executable, "-m", "perf.references.kcat", mode, "--brokers", broker.bootstrap]
                cpu_before = CpuTimes.take(groups)
                with (directory / f"{mode}.log").open("ab") as log:
                    proc = subprocess.Popen(
                        [*command, "--topic", topic, *extra],
                        stdout=subprocess.PIPE,
                        stderr=log,
                        env=_env(),
                        start_new_session=True,
                    )
                    assert proc.stdout is not None
                    output = proc.stdout.read()
                    code, client_cpu, _rss = wait_rusage(proc, timeout=s.duration + 180)
                broker_cpu = (CpuTimes.take(groups) - cpu_before)["broker"]
                if code != 0:
                    raise FootfallError(f"kcat reference {mode} exited with {code}; see {directory / f'{mode}.log'}")
                result: dict[str, Any] = orjson.loads(output)
                records = result["records"]
                result["records_per_s"] = round(result["records_per_s"], 1)
                result["cpu_s"] = {"client": round(client_cpu, 3), "broker": round(broker_cpu, 3)}
                result["cpu_s_per_1k"] = round((client_cpu + broker_cpu) / (records / 1000), 4) if records else None
                result["note"] = f"librdkafka {mode}: client + broker CPU s per 1k records"
                return result

            produced = kcat("produce", "--duration", f"{s.duration:g}", "--records", str(_KAFKA_REFERENCE_MAX_RECORDS))
            consumed = kcat("consume", "--expect", str(produced["records"]))
        return produced, consumed

    # -- verification -------------------------------------------------------------------------
    def verify(self) -> list[dict[str, Any]]:
        """``bench verify`` of every phase's run file against that phase's records."""
        from bench.verify import verify

        checks = []
        for p in self.phases:
            try:
                result = verify(p.run_file, p.records)
            except FootfallError as exc:
                checks.append({"repeat": p.repeat, "phase": p.name, "ok": False, "error": str(exc)})
                continue
            checks.append(
                {
                    "repeat": p.repeat,
                    "phase": p.name,
                    "ok": result.ok,
                    "lost": result.lost,
                    "duplicated": result.duplicated,
                    "unexpected": result.unexpected,
                    "altered": result.altered,
                    "misplaced": result.misplaced,
                    "out_of_order": result.out_of_order,
                    "acknowledged": result.acknowledged,
                    "line": result.line(),
                }
            )
            _say(f"verify repeat {p.repeat + 1} {p.name}: {result.line()}")
        return checks


def _bare_sanic_module() -> str | None:
    """The gateway engineer's bare Sanic endpoint, else the bench engineer's stand-in (same command line)."""
    for module in ("perf.references.bare_sanic", "perf.references.bare_sanic_bench"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until a worker answers HTTP on ``port`` (any status: a listening socket alone is not enough)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FootfallError(f"the reference server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # 404 or 405: a worker is serving
        except OSError:
            time.sleep(0.1)
    raise FootfallError(f"the reference server did not listen on {port} within {timeout:g}s")


def _repeat(runner: Runner, repeat: int) -> dict[str, Any]:
    s = runner.settings
    out: dict[str, Any] = {"repeat": repeat, "phases": {}, "references": {}}
    tag = f"repeat {repeat + 1}/{s.repeats}"
    if not s.skip_references:
        bare = runner.bare_sanic(repeat)
        if bare is not None:
            out["references"]["bare_sanic"] = bare
            _say(f"{tag} bare_sanic: {bare['requests_per_s']:,.0f} req/s")
        produce, consume = runner.kafka(repeat)
        out["references"]["kafka_produce"] = produce
        out["references"]["kafka_consume"] = consume
        _say(f"{tag} kafka: produce {produce['records_per_s']:,.0f}/s, consume {consume['records_per_s']:,.0f}/s")
    closed = ["--concurrent-clients", str(s.concurrent_clients), "--report-interval", "0"]
    top = runner.phase(repeat, "max", closed)
    out["phases"]["max"] = top
    _say(_line(tag, "max", top))
    for pct in s.rates:
        rate = top["requests_per_s"] * pct / 100
        name = f"rate{pct:g}"
        args = ["--concurrent-clients", str(s.concurrent_clients), "--rate", f"{rate:.1f}"]
        figures = runner.phase(repeat, name, args, offered=rate)
        out["phases"][name] = figures
        _say(_line(tag, name, figures))
    if not s.skip_references:
        figures = runner.phase(repeat, "per_report", closed, gateway_module="perf.references.per_report")
        out["phases"]["per_report"] = figures
        _say(_line(tag, "per_report", figures))
    return out


def _line(tag: str, name: str, f: Mapping[str, Any]) -> str:
    return (
        f"{tag} {name}: {f['requests_per_s']:,.0f} req/s, {f['reports_per_s']:,.0f} reports/s, "
        f"landed {f['landed_per_s'] or 0:,.0f}/s, p99 {f['latency_p99_ms']:.1f} ms, "
        f"e2e p99 {f['e2e_p99_ms']} ms, failed {f['failed_requests']}"
    )


def run(settings: E2eSettings, argv: Sequence[str] = ()) -> int:
    """Run the scenario; returns 0, or 1 if verification or ``--compare`` failed."""
    s = effective_settings(settings)
    own_work = not s.work_directory
    work = Path(tempfile.mkdtemp(prefix="footfall-perf-")) if own_work else Path(s.work_directory)
    work.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "timestamp": timestamp(),
        "command": shlex.join(["python", "-m", "perf", "e2e", *argv]),
        "machine": machine(),
        "revision": source_revision(_ROOT),
        "settings": msgspec.to_builtins(s),
    }
    runner = Runner(s, work)
    started = time.monotonic()
    _say(f"work directory {work}; {s.repeats} repeat(s) × {s.duration:g} s phases")
    try:
        repeats = [_repeat(runner, r) for r in range(s.repeats)]
        checks = runner.verify()
    finally:
        if own_work and not s.keep:
            shutil.rmtree(work, ignore_errors=True)
    content["repeats"] = repeats
    content["summary"] = summarize(repeats)
    content["skipped"] = runner.skipped
    content["verification"] = checks
    content["wall_s"] = round(time.monotonic() - started, 1)
    content["ok"] = bool(checks) and all(c["ok"] for c in checks)
    table = markdown(content)
    failed = not content["ok"]
    if s.compare:
        changes = compare_files(Path(s.compare), content, s.threshold)
        content["comparison"] = {
            "baseline": s.compare,
            "threshold": s.threshold,
            "regressed": [c.name for c in changes if c.regressed],
        }
        table += "\n" + format_changes(changes, s.compare)
        failed = failed or any(c.regressed for c in changes)
    json_path, md_path = write_results(Path(s.results_directory or _ROOT / "perf" / "results"), content, table)
    print(table)
    print(f"results: {json_path} {md_path}" + (f"  (work directory kept: {work})" if s.keep or not own_work else ""))
    if not content["ok"]:
        print(
            "FAILED: verification found lost, duplicated, unexpected, altered, misplaced or out-of-order "
            "reports (see above)",
            file=sys.stderr,
        )
    return 1 if failed else 0
