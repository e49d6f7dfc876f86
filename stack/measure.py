"""What a rehearsal's bench run cost: CPU and peak RSS per role from /proc, latency quantiles, a JSON file.

``footfall rehearse --measure-json FILE`` samples every role's process groups while the bench
runs (:class:`ResourceSampler`), waits until what it got acknowledged has landed, and writes
throughput, end-to-end and ack latency quantiles (from the roles' histograms) and CPU per
1000 reports per role (:func:`measure`).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from footfall import promtext
from footfall.signals import STOP_SIGNALS

if TYPE_CHECKING:
    from stack.rehearsal import Rehearsal

__all__ = ["ResourceSampler", "histogram_quantiles", "measure"]

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(process group, CPU seconds user+system, peak RSS in KiB) of ``pid``, or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, hwm


class ResourceSampler:
    """CPU seconds and peak RSS per role, sampled from /proc every ``interval`` seconds.

    A role's processes are every process in the groups its leaders head (a gateway's or a
    sink's workers too). CPU counts from :meth:`start`; a process that exits between two
    samples loses at most its last ``interval`` of CPU. Peak RSS is the sum of each
    process's VmHWM, so pages forked workers share are counted once per process: an upper bound.
    """

    def __init__(self, leaders: Callable[[], dict[str, list[int]]], interval: float = 0.5) -> None:
        self._leaders = leaders
        self._interval = interval
        self._baseline: dict[int, float] = {}
        self._last: dict[int, tuple[str, float, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)

    def _sample(self) -> dict[int, tuple[str, float, int]]:
        groups = {pid: role for role, pids in self._leaders().items() for pid in pids}
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and stat[0] in groups:
                found[int(entry.name)] = (groups[stat[0]], stat[1], stat[2])
        return found

    def start(self) -> Self:
        self._baseline = {pid: cpu for pid, (_, cpu, _) in self._sample().items()}
        self._thread.start()
        return self

    def _merge(self) -> None:
        # max: an exited process not yet reaped (a zombie) reports no memory and may report less CPU
        for pid, (role, cpu, hwm) in self._sample().items():
            _, old_cpu, old_hwm = self._last.get(pid, (role, 0.0, 0))
            self._last[pid] = (role, max(cpu, old_cpu), max(hwm, old_hwm))

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # Ctrl+C is the main thread's (stack.children.spawn)
        while not self._stop.wait(self._interval):
            self._merge()

    def stop(self) -> dict[str, dict[str, float]]:
        """role -> {"cpu_s": CPU seconds since start, "peak_rss_mb": summed VmHWM}."""
        self._stop.set()
        self._thread.join(5)
        self._merge()
        out: dict[str, dict[str, float]] = {}
        for pid, (role, cpu, hwm) in self._last.items():
            figures = out.setdefault(role, {"cpu_s": 0.0, "peak_rss_mb": 0.0})
            figures["cpu_s"] += cpu - self._baseline.get(pid, 0.0)
            figures["peak_rss_mb"] += hwm / 1024
        return out


def histogram_quantiles(text: str, name: str, quantiles: Sequence[float] = (0.5, 0.99)) -> dict[str, float]:
    """Quantiles (bucket upper bounds) of histogram ``name`` over every label set in ``text``."""
    counts: dict[float, float] = {}
    for sample in promtext.samples(text):
        if sample.name == f"{name}_bucket":
            le = float(sample.labels["le"])  # "+Inf" reads as infinity
            counts[le] = counts.get(le, 0.0) + sample.value
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    out = {}
    for q in quantiles:
        out[f"p{q * 100:g}"] = next((b for b in bounds if total and counts[b] >= q * total), float("nan"))
    out["count"] = total
    return out


def measure(r: Rehearsal, sampler: ResourceSampler, run_json: Path, started: float, out: Path) -> None:
    """After the bench: wait until all it got acknowledged has landed, then write the figures.

    Landed/s is acknowledged reports over bench start -> the sinks' counter reaching them
    (counters are published about once a second: ±1 s). CPU and peak RSS cover the same window.
    """
    summary = json.loads(run_json.read_text())
    acked = int(summary["counts"]["reports_acked"])
    bench_elapsed = float(summary["elapsed_s"])
    deadline = time.monotonic() + 120.0
    while r.landed() < acked and time.monotonic() < deadline:
        time.sleep(0.2)
    landed_after = time.monotonic() - started
    roles = sampler.stop()
    instances = {role: len(pids) for role, pids in r.group_leaders().items()}
    figures = {
        "topology": {
            "kafka": r.config.kafka,
            "kafka_nodes": len(r.brokers.node_ids) if r.brokers else 0,
            "gateways": r.gateway_count,
            "sinks": r.sink_count,
        },
        "bench_settings": summary["settings"],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "reports_acknowledged": acked,
        "bench_elapsed_s": bench_elapsed,
        "acknowledged_per_s": acked / bench_elapsed if bench_elapsed else 0.0,
        "landed_per_s": acked / landed_after,
        "bench_latency_ms": summary["latency_ms"],
        "e2e_latency_s": histogram_quantiles(r.scrape_all("sink"), "footfall_sink_e2e_latency_seconds"),
        "ack_latency_s": histogram_quantiles(r.scrape_all("gateway"), "footfall_gateway_produce_ack_seconds"),
        "roles": {
            role: {
                **values,
                "instances": instances.get(role, 0),
                "cpu_ms_per_1k_reports": 1000 * values["cpu_s"] / (acked / 1000) if acked else 0.0,
            }
            for role, values in sorted(roles.items())
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    e2e = figures["e2e_latency_s"]
    print(
        f"\n  measured: {figures['acknowledged_per_s']:,.0f} acknowledged/s, {figures['landed_per_s']:,.0f} landed/s; "
        f"e2e p50 <= {e2e['p50']}s p99 <= {e2e['p99']}s; {out}"
    )
