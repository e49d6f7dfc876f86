"""``python -m perf soak --minutes M``: the pipeline at 70 % of its maximum for M minutes; is memory flat?

(A little over 400 lines: one scenario, its steps below read in order.)

Not part of CI (it takes as long as you ask). Steps:

1. **Probe the maximum.** A fresh stack (embedded broker, gateway, sink) under a short
   closed-loop bench run (``--report-interval 0``); its requests/s is the maximum.
2. **Soak.** Another fresh stack (so the probe's records and the broker's memory do not
   count) under an open-model bench run (``--rate`` = ``--load`` x maximum) for M minutes.
   Every ``--sample-interval`` seconds the RSS of every process (gateway and its workers,
   sink supervisor and workers, broker, bench) and the accepted/landed counters are sampled.
3. **Settle and verify.** Wait until the sink has landed what the gateway accepted, then
   ``bench verify``: every error counter (lost, duplicated, unexpected, altered, misplaced,
   out_of_order) must be 0.
4. **Report** (Markdown, printed and written to ``--output``): per role, RSS at the end of
   the warm-up and at the end, the growth and whether it is flat (< ``--max-growth``).

The embedded broker (Tansu, memory storage) keeps every record in memory and never frees
it: its RSS grows by ~``--broker-bytes-per-record`` per stored record by design. The report
shows the broker separately, with that expected growth subtracted, instead of blaming
Footfall's processes for it. Real Kafka keeps records on disk.

Exit code: 0 when verify is clean and every Footfall role's memory is flat; 1 otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from footfall import promtext
from footfall.settings import parse_settings, run_main
from perf.procstat import group_members
from stack.processes import Stack, StackConfig

__all__ = ["SoakSettings", "main", "run"]

ENV_PREFIX = "FOOTFALL_SOAK_"
_ROLES = ("gateway", "sink", "broker", "bench")
_FOOTFALL_ROLES = ("gateway", "sink")


class SoakSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of ``python -m perf soak`` (flags, env vars ``FOOTFALL_SOAK_*``)."""

    minutes: Annotated[float, Meta(gt=0, description="length of the soak phase in minutes")] = 10.0
    warmup_minutes: Annotated[
        float, Meta(ge=0, description="minutes excluded from the flatness check (capped at half the run)")
    ] = 2.0
    load: Annotated[float, Meta(gt=0, le=1, description="fraction of the measured maximum to offer")] = 0.7
    probe_seconds: Annotated[float, Meta(gt=0, description="length of the closed-loop maximum probe")] = 20.0
    probe_clients: Annotated[int, Meta(ge=1, description="bench clients of the closed-loop probe")] = 32
    concurrent_clients: Annotated[
        int, Meta(ge=1, description="bench clients of the soak (open model: enough to keep the rate when slow)")
    ] = 128
    gateway_workers: Annotated[int, Meta(ge=1, description="gateway worker processes")] = 2
    sink_workers: Annotated[int, Meta(ge=1, description="sink worker processes")] = 2
    sample_interval: Annotated[float, Meta(gt=0, description="seconds between RSS samples")] = 5.0
    max_growth: Annotated[float, Meta(gt=0, description="largest RSS growth after warm-up that counts as flat")] = 0.10
    broker_bytes_per_record: Annotated[
        int, Meta(ge=0, description="expected RSS growth of the embedded broker per stored record")
    ] = 200
    work_directory: Annotated[str, Meta(description="where records and logs go; empty = a temporary directory")] = ""
    output: Annotated[str, Meta(description="write the Markdown report here; empty = print only")] = ""
    json: Annotated[str, Meta(description="write the samples and results as JSON here; empty = none")] = ""


@dataclass
class _Sample:
    t: float
    rss: dict[str, int]
    processes: dict[str, int]  # "role:pid" -> RSS
    accepted: float
    landed: float


@dataclass
class _Soak:
    settings: SoakSettings
    root: Path
    samples: list[_Sample] = field(default_factory=list)


def _say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _stack(settings: SoakSettings, root: Path) -> Stack:
    return Stack(
        StackConfig(
            record_directory=root / "records",
            log_directory=root / "logs",
            dashboard=False,
            gateway_workers=settings.gateway_workers,
            sink_workers=settings.sink_workers,
        )
    )


def _bench(stack: Stack, root: Path, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
    log = (root / "logs" / f"{name}.log").open("ab")
    try:
        return subprocess.Popen(
            stack.bench_command(*args, "--json", str(root / f"{name}.json"), "--quiet", "--max-error-rate", "1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )
    finally:
        log.close()


def _wait_bench(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(30)


def _summary(path: Path) -> dict[str, Any]:
    content: dict[str, Any] = json.loads(path.read_bytes())
    return content


def probe_maximum(settings: SoakSettings, root: Path) -> tuple[float, float, float]:
    """Step 1: the maximum, from a closed-loop run on a fresh stack.

    Returns ``(maximum, gateway_rate, pipeline_rate)`` in requests/s: what the gateway
    acknowledged per second, what the sink landed per second over the same run (on a small
    machine the sink shares the CPUs and lags), and the smaller of the two, which is the
    pipeline's sustainable maximum.
    """
    with _stack(settings, root) as stack:
        _say(f"probe: closed loop, {settings.probe_clients} clients, {settings.probe_seconds:g}s")
        proc = _bench(
            stack,
            root,
            "probe",
            ["--concurrent-clients", str(settings.probe_clients), "--report-interval", "0",
             "--duration", f"{settings.probe_seconds:g}"],
        )  # fmt: skip
        _wait_bench(proc, settings.probe_seconds + 60)
        landed = stack.landed()
    summary = _summary(root / "probe.json")
    gateway_rate = float(summary["throughput"]["requests_per_s"])
    counts = summary["counts"]
    per_request = counts["reports_acked"] / max(counts["ok"], 1)
    pipeline_rate = landed / per_request / max(float(summary["elapsed_s"]), 1e-9)
    maximum = min(gateway_rate, pipeline_rate)
    _say(f"probe: gateway {gateway_rate:.1f} requests/s, landed {pipeline_rate:.1f} requests/s -> max {maximum:.1f}")
    return maximum, gateway_rate, pipeline_rate


def _sample(stack: Stack, bench: subprocess.Popen[bytes], started: float) -> _Sample:
    groups = {
        "gateway": stack.processes["gateway"].pid,
        "sink": stack.processes["sink"].pid,
        "bench": bench.pid,
    }
    processes: dict[str, int] = {}
    rss: dict[str, int] = {}
    for role, pgid in groups.items():
        total = 0
        for pid in group_members(pgid):
            value = _rss(pid)
            processes[f"{role}:{pid}"] = value
            total += value
        rss[role] = total
    broker_pid = stack.broker.pid if stack.broker is not None else 0
    rss["broker"] = _rss(broker_pid) if broker_pid else 0
    processes[f"broker:{broker_pid}"] = rss["broker"]
    try:
        accepted, landed = stack.accepted(), stack.landed()
    except OSError:
        accepted = landed = float("nan")
    return _Sample(time.monotonic() - started, rss, processes, accepted, landed)


def _mean_rss(samples: Sequence[_Sample], role: str) -> float:
    return statistics.fmean(s.rss[role] for s in samples) if samples else float("nan")


def _window(samples: Sequence[_Sample], start: float, length: float) -> list[_Sample]:
    return [s for s in samples if start <= s.t < start + length]


def analyse(samples: Sequence[_Sample], settings: SoakSettings, duration: float) -> dict[str, Any]:
    """Per role: RSS just after warm-up vs at the end (means over one minute, or a fifth of the run)."""
    warmup = min(settings.warmup_minutes * 60, duration / 2)
    span = max(settings.sample_interval * 2, min(60.0, duration / 5))
    early = _window(samples, warmup, span)
    late = [s for s in samples if s.t >= duration - span]
    out: dict[str, Any] = {"warmup_s": warmup, "window_s": span, "roles": {}}
    records_early = statistics.fmean(s.accepted for s in early) if early else 0.0
    records_late = statistics.fmean(s.accepted for s in late) if late else 0.0
    for role in _ROLES:
        before, after = _mean_rss(early, role), _mean_rss(late, role)
        growth = (after - before) / before if before else float("nan")
        entry: dict[str, Any] = {"rss_after_warmup": before, "rss_end": after, "growth": growth}
        if role == "broker":
            expected = settings.broker_bytes_per_record * max(0.0, records_late - records_early)
            residual = (after - before - expected) / before if before else float("nan")
            stored = max(0.0, records_late - records_early)
            measured = (after - before) / stored if stored else float("nan")
            entry.update(
                expected_growth_bytes=expected,
                residual_growth=residual,
                records_stored=stored,
                bytes_per_record=measured,
            )
            entry["flat"] = residual < settings.max_growth
        else:
            entry["flat"] = growth < settings.max_growth
        out["roles"][role] = entry
    return out


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def report(
    settings: SoakSettings,
    maximum: float,
    probe: tuple[float, float],
    rate: float,
    analysis: dict[str, Any],
    bench: dict[str, Any],
    verify_line: str,
    verify_ok: bool,
    sink_errors: dict[str, float],
    duration: float,
) -> str:
    """The Markdown report."""
    roles = analysis["roles"]
    flat = all(roles[r]["flat"] for r in _FOOTFALL_ROLES)
    lines = [
        f"# Soak: {duration / 60:.1f} minutes at {settings.load:.0%} of the maximum",
        "",
        f"- when: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs; "
        f"gateway {settings.gateway_workers} workers, sink {settings.sink_workers} workers, embedded broker",
        f"- maximum (closed loop, {settings.probe_clients} clients, {settings.probe_seconds:g}s): gateway "
        f"{probe[0]:.1f} requests/s, landed by the sink {probe[1]:.1f} requests/s -> maximum {maximum:.1f} "
        f"requests/s; offered {rate:.1f} requests/s (open model, `--rate`, {settings.concurrent_clients} clients)",
        f"- achieved: {bench['throughput']['requests_per_s']} requests/s, {bench['throughput']['reports_per_s']} "
        f"reports/s; requests {bench['counts']['requests']}, failed {bench['counts']['failed']}, "
        f"errors {bench['errors']}",
        f"- latency (from the intended send time): p50 {bench['latency_ms'].get('p50', 0):.1f} ms, "
        f"p99 {bench['latency_ms'].get('p99', 0):.1f} ms, max {bench['latency_ms'].get('max', 0):.1f} ms",
        f"- sink: {', '.join(f'{k} {v:.0f}' for k, v in sink_errors.items())}",
        f"- verify: `{verify_line}` -> {'OK' if verify_ok else 'FAILED'}",
        f"- Footfall memory flat (gateway and sink growth < {settings.max_growth:.0%} after a "
        f"{analysis['warmup_s'] / 60:.1f}-minute warm-up, "
        f"means over {analysis['window_s']:.0f}s windows): {'yes' if flat else 'NO'}",
        "",
        "| process group | RSS after warm-up | RSS at the end | growth | flat |",
        "|---|---:|---:|---:|:-:|",
    ]
    for role in _ROLES:
        r = roles[role]
        note = ""
        if role == "broker":
            note = (
                f" (embedded Tansu, not Footfall: {r['records_stored']:,.0f} records stored meanwhile, expected "
                f"+{_mib(r['expected_growth_bytes'])} at {settings.broker_bytes_per_record} B each, residual "
                f"{r['residual_growth']:+.1%}; measured {r['bytes_per_record']:.0f} B per record)"
            )
        if role == "bench":
            note = " (load generator, not Footfall)"
        lines.append(
            f"| {role}{note} | {_mib(r['rss_after_warmup'])} | {_mib(r['rss_end'])} | {r['growth']:+.1%} "
            f"| {'yes' if r['flat'] else 'no'} |"
        )
    lines.append("")
    return "\n".join(lines)


def run(settings: SoakSettings) -> int:
    root = Path(settings.work_directory or tempfile.mkdtemp(prefix="footfall-soak-"))
    (root / "probe" / "logs").mkdir(parents=True, exist_ok=True)
    (root / "soak" / "logs").mkdir(parents=True, exist_ok=True)
    _say(f"work directory {root}")
    maximum, gateway_rate, pipeline_rate = probe_maximum(settings, root / "probe")
    rate = maximum * settings.load
    duration = settings.minutes * 60
    soak_root = root / "soak"
    samples: list[_Sample] = []
    with _stack(settings, soak_root) as stack:
        _say(f"soak: {rate:.1f} requests/s for {settings.minutes:g} min")
        bench = _bench(
            stack,
            soak_root,
            "soak",
            ["--concurrent-clients", str(settings.concurrent_clients), "--rate", f"{rate:.1f}",
             "--duration", f"{duration:g}"],
        )  # fmt: skip
        started = time.monotonic()
        next_sample = started
        while bench.poll() is None:
            if time.monotonic() >= next_sample:
                sample = _sample(stack, bench, started)
                samples.append(sample)
                next_sample += settings.sample_interval
                if len(samples) % max(1, int(60 / settings.sample_interval)) == 0:
                    rss = ", ".join(f"{k} {_mib(v)}" for k, v in sample.rss.items())
                    _say(f"t={sample.t:5.0f}s accepted {sample.accepted:.0f} landed {sample.landed:.0f}; {rss}")
            time.sleep(min(0.5, settings.sample_interval))
        code = _wait_bench(bench, 60)
        _say(f"bench finished (exit {code}); settling")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if stack.landed() >= stack.accepted():
                    break
            except OSError:
                pass
            time.sleep(0.5)
        from bench.verify import verify

        result = verify(soak_root / "soak.json", stack.config.record_directory)
        while result.lost and time.monotonic() < deadline:  # records still on their way to the files
            time.sleep(1.0)
            result = verify(soak_root / "soak.json", stack.config.record_directory)
        sink_metrics = stack.metrics("sink")
        sink_errors = {
            "write errors": promtext.total(sink_metrics, "footfall_sink_write_errors_total"),
            "worker restarts": promtext.total(sink_metrics, "footfall_sink_worker_restarts_total"),
            "records to DLQ": promtext.total(sink_metrics, "footfall_sink_dlq_records_total"),
            "parked on retry": promtext.total(sink_metrics, "footfall_sink_retry_parked_records_total"),
        }
    bench_summary = _summary(soak_root / "soak.json")
    analysis = analyse(samples, settings, duration)
    text = report(
        settings,
        maximum,
        (gateway_rate, pipeline_rate),
        rate,
        analysis,
        bench_summary,
        result.line(),
        result.ok,
        sink_errors,
        duration,
    )
    print(text)
    if settings.output:
        Path(settings.output).write_text(text)
    if settings.json:
        Path(settings.json).write_text(
            json.dumps(
                {
                    "maximum": maximum,
                    "rate": rate,
                    "analysis": analysis,
                    "verify": result.line(),
                    "samples": [s.__dict__ for s in samples],
                },
                indent=1,
            )
        )
    flat = all(analysis["roles"][r]["flat"] for r in _FOOTFALL_ROLES)
    return 0 if result.ok and flat else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m perf soak [--minutes M] ...``; see the module docstring. Returns the exit code."""

    def _main() -> int:
        settings = parse_settings(
            SoakSettings,
            list(sys.argv[1:] if argv is None else argv),
            prog="python -m perf soak",
            description="Soak: the pipeline at 70% of its maximum for --minutes; reports memory growth and verify.",
            env_prefix=ENV_PREFIX,
        )
        return run(settings)

    return run_main(_main)


if __name__ == "__main__":
    raise SystemExit(main())
