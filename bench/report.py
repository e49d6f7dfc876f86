"""What a run shows and writes: live progress on stderr, a final summary, the run file (``--json``).

Live progress uses rich on a terminal (refreshed 4 times a second); when stderr is not a
TTY, or with ``--quiet``, it is one plain line every ``--progress-interval`` seconds.

The run file (format ``footfall-bench-run``, version 2) holds the settings (seed resolved),
the run id (12 hex digits, derived into every userId: :mod:`bench.identity`), library
versions, counts, errors, latency percentiles, throughput, and the *ledger*: per client its
userId, the days acknowledged per report type as half-open ranges, and the failed attempts
per (type, day) with how many of them may have been written. ``bench verify`` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec

from bench.identity import format_run_id
from bench.latency import LatencyHistogram
from bench.runner import Progress, RunResult, mode_of
from bench.settings import BenchSettings
from bench.worker import Snapshot

__all__ = ["RUN_FORMAT", "RUN_VERSION", "LiveProgress", "error_rate", "print_summary", "summary", "write_run_file"]

RUN_FORMAT: Final = "footfall-bench-run"
RUN_VERSION: Final = 2  # 2: run_id, userIds derived from it, failed attempts as [day, n, maybe_written]
_LIBRARIES: Final = ("footfall", "msgspec", "uvloop", "hdrhistogram", "rich", "orjson")


def error_rate(totals: Snapshot) -> float:
    """Failed / finished requests, not counting requests cut off by a forced stop."""
    finished = totals.requests - totals.cancelled
    return (totals.failed - totals.cancelled) / finished if finished else 0.0


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "footfall":
                from footfall import __version__

                out[name] = __version__
    return out


def summary(result: RunResult) -> dict[str, Any]:
    """The run file's content (also what the summary table shows)."""
    totals, elapsed = result.totals, max(result.elapsed_s, 1e-9)
    settings = msgspec.to_builtins(result.settings)
    settings["seed"] = result.seed
    mode = mode_of(result.settings)
    return {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "mode": mode,
        "settings": settings,
        "seed": result.seed,
        "run_id": format_run_id(result.run_id),
        "profile": result.settings.profile,
        "start_date": result.settings.start_date.isoformat(),
        "versions": _versions(),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started_at": result.started_at,
        "elapsed_s": round(result.elapsed_s, 3),
        "interrupted": result.interrupted,
        "workers_lost": result.workers_lost,
        "counts": {
            "requests": totals.requests,
            "ok": totals.ok,
            "failed": totals.failed,
            "cancelled": totals.cancelled,
            "attempts": totals.attempts,
            "reports_sent": totals.reports_sent,
            "reports_acked": totals.reports_acked,
            "bytes_sent": totals.bytes_sent,
            "ticks_missed": totals.ticks_missed,
        },
        "errors": {
            "by_status": dict(sorted(totals.by_status.items())),
            "by_kind": dict(sorted(totals.by_kind.items())),
        },
        "error_rate": round(error_rate(totals), 6),
        "latency_ms": result.hist.summary(),
        "latency_from": "intended send time" if mode == "open" else "actual send time",
        "schedule_lag_ms": result.lag.summary(),
        "throughput": {
            "requests_per_s": round(totals.requests / elapsed, 1),
            "reports_per_s": round(totals.reports_acked / elapsed, 1),
            "mbytes_per_s": round(totals.bytes_sent / elapsed / 1e6, 3),
        },
        "ledger": {"clients": result.ledgers},
    }


def write_run_file(path: str, content: dict[str, Any]) -> None:
    """Write the run file atomically (a reader never sees half of it)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(msgspec.json.encode(content))
    tmp.replace(target)


def _fmt_errors(totals: Snapshot) -> str:
    parts = [f"{k}:{v}" for k, v in sorted(totals.by_status.items())]
    parts += [f"{k}:{v}" for k, v in sorted(totals.by_kind.items())]
    return " ".join(parts) or "-"


def print_summary(content: dict[str, Any], stream: TextIO | None = None) -> None:
    """The final summary table (rich; plain text when the stream is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, highlight=False)
    counts, lat, thr = content["counts"], content["latency_ms"], content["throughput"]
    title = (
        f"footfall bench — {content['mode']} mode, profile {content['profile']}, seed {content['seed']}, "
        f"run {content['run_id']}"
    )
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("elapsed", f"{content['elapsed_s']:.2f} s"),
        ("requests (ok / failed)", f"{counts['requests']} ({counts['ok']} / {counts['failed']})"),
        ("reports acknowledged", str(counts["reports_acked"])),
        ("throughput", f"{thr['requests_per_s']:.1f} req/s, {thr['reports_per_s']:.1f} reports/s"),
        ("sent", f"{thr['mbytes_per_s']:.2f} MB/s"),
        ("error rate", f"{content['error_rate']:.4%}"),
        ("errors", " ".join(f"{k}:{v}" for d in content["errors"].values() for k, v in d.items()) or "-"),
    ]
    if counts["ticks_missed"]:
        rows.append(("ticks missed", str(counts["ticks_missed"])))
    rows.append((f"latency (from {content['latency_from']})", f"{lat['count']} samples"))
    rows += [(f"  {name}", f"{lat[name]:.3f} ms") for name in ("p50", "p90", "p99", "p99.9", "max")]
    lag = content["schedule_lag_ms"]
    if lag["count"]:
        rows.append(
            (
                "schedule lag (client lateness) p50 / p99 / max",
                f"{lag['p50']:.3f} / {lag['p99']:.3f} / {lag['max']:.3f} ms",
            )
        )
    for row in rows:
        table.add_row(*row)
    console.print(table)


class LiveProgress:
    """Live progress on stderr while the run goes; see the module docstring."""

    def __init__(self, settings: BenchSettings, stream: TextIO | None = None) -> None:
        self._settings = settings
        self._stream = stream or sys.stderr
        self._rich = not settings.quiet and self._stream.isatty()
        self._task: asyncio.Task[None] | None = None
        self._progress: Progress | None = None

    def start(self, progress: Progress) -> None:
        """Begin showing ``progress()`` (called from the event loop, as ``run``'s ``on_start``)."""
        self._progress = progress
        self._task = asyncio.get_running_loop().create_task(self._show_rich() if self._rich else self._show_plain())

    async def stop(self) -> None:
        """Stop showing progress."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _line(self, totals: Snapshot, hist: LatencyHistogram, rates: tuple[float, float], elapsed: float) -> str:
        return (
            f"[{elapsed:7.1f}s] {rates[0]:9.1f} req/s {rates[1]:10.1f} reports/s  in flight {totals.in_flight:5d}  "
            f"ok {totals.ok}  failed {totals.failed}  p50 {hist.percentile_ms(50):.2f} ms  "
            f"p99 {hist.percentile_ms(99):.2f} ms  errors {_fmt_errors(totals)}"
        )

    async def _show_plain(self) -> None:
        assert self._progress is not None
        await self._tick(self._settings.progress_interval, lambda line, *_: print(line, file=self._stream, flush=True))

    async def _tick(self, interval: float, show: Callable[..., None]) -> None:
        assert self._progress is not None
        start = last_t = time.monotonic()
        last_req = last_rep = 0
        while True:
            await asyncio.sleep(interval)
            totals, hist = self._progress()
            now = time.monotonic()
            dt = max(now - last_t, 1e-9)
            rates = ((totals.requests - last_req) / dt, (totals.reports_acked - last_rep) / dt)
            last_t, last_req, last_rep = now, totals.requests, totals.reports_acked
            show(self._line(totals, hist, rates, now - start), totals, hist, rates, now - start)

    async def _show_rich(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table

        console = Console(file=self._stream)

        def render(totals: Snapshot, hist: LatencyHistogram, rates: tuple[float, float], elapsed: float) -> Table:
            table = Table(title=f"footfall bench — {mode_of(self._settings)} — {elapsed:.0f} s", show_header=False)
            table.add_column(style="bold")
            table.add_column(justify="right")
            table.add_row("requests/s", f"{rates[0]:.1f}")
            table.add_row("reports/s", f"{rates[1]:.1f}")
            table.add_row("in flight", str(totals.in_flight))
            table.add_row("requests ok / failed", f"{totals.ok} / {totals.failed}")
            table.add_row("errors by status", " ".join(f"{k}:{v}" for k, v in sorted(totals.by_status.items())) or "-")
            table.add_row("errors by kind", " ".join(f"{k}:{v}" for k, v in sorted(totals.by_kind.items())) or "-")
            table.add_row("latency p50 / p99", f"{hist.percentile_ms(50):.2f} / {hist.percentile_ms(99):.2f} ms")
            return table

        with Live(console=console, auto_refresh=False, transient=False) as live:
            await self._tick(0.5, lambda _line, *args: live.update(render(*args), refresh=True))
