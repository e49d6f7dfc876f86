"""Settings of ``python -m perf e2e`` and ``python -m perf profile``: flag > env var (``FOOTFALL_PERF_*``) > default."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from footfall.settings import LogLevel

__all__ = ["ENV_PREFIX", "CompareSettings", "E2eSettings", "ProfileSettings"]

ENV_PREFIX: Final = "FOOTFALL_PERF_"


class E2eSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One end-to-end scenario run: phases, references, repeats."""

    duration: Annotated[float, Meta(gt=0, description="seconds of load per phase")] = 10.0
    repeats: Annotated[
        int, Meta(ge=1, le=100, description="repeats of every phase and reference; figures are medians")
    ] = 3
    rates: Annotated[
        list[float],
        Meta(
            description="fixed-rate phases, in percent of the measured maximum (open model)",
            extra={"flag": "--rate-percent", "env": "FOOTFALL_PERF_RATE_PERCENTS"},
        ),
    ] = msgspec.field(default_factory=lambda: [25.0, 50.0, 80.0])
    concurrent_clients: Annotated[int, Meta(ge=1, le=100_000, description="bench clients (connections)")] = 64
    bench_processes: Annotated[int, Meta(ge=1, le=64, description="bench worker processes")] = 1
    gateway_workers: Annotated[int, Meta(ge=1, le=64, description="gateway worker processes")] = 2
    sink_workers: Annotated[int, Meta(ge=1, le=64, description="sink worker processes")] = 2
    partitions: Annotated[int, Meta(ge=1, le=1024, description="partitions per topic")] = 4
    gateway_args: Annotated[
        list[str],
        Meta(
            description="extra gateway flag, e.g. --gateway-arg=--linger-ms=2",
            extra={"flag": "--gateway-arg", "env": "FOOTFALL_PERF_GATEWAY_ARGS"},
        ),
    ] = msgspec.field(default_factory=list)
    sink_args: Annotated[
        list[str],
        Meta(
            description="extra sink flag, e.g. --sink-arg=--fsync=never",
            extra={"flag": "--sink-arg", "env": "FOOTFALL_PERF_SINK_ARGS"},
        ),
    ] = msgspec.field(default_factory=list)
    skip_references: Annotated[
        bool, Meta(description="skip bare Sanic, kcat and per-report references (no ratios)")
    ] = False
    quick: Annotated[bool, Meta(description="CI smoke: 1 repeat, 1.5 s phases, 16 clients (overrides those flags)")] = (
        False
    )
    compare: Annotated[
        str, Meta(description="baseline results JSON: exit 1 if a ratio regressed beyond --threshold")
    ] = ""
    threshold: Annotated[float, Meta(gt=0, lt=1, description="allowed relative drop of a ratio vs --compare")] = 0.15
    results_directory: Annotated[
        str, Meta(description="where <timestamp>.json and .md go (default: perf/results in the source tree)")
    ] = ""
    work_directory: Annotated[
        str, Meta(description="records, logs and bench run files (default: a temporary directory, removed after)")
    ] = ""
    keep: Annotated[bool, Meta(description="keep the work directory (records, logs) after the run")] = False
    log_level: Annotated[LogLevel, Meta(description="log level of the stack's processes")] = "warning"


class ProfileSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``perf profile gateway|sink``: record one service with py-spy under bench load."""

    service: Annotated[Literal["gateway", "sink"], Meta(description="service to profile (also positional)")]
    seconds: Annotated[float, Meta(gt=0, description="seconds to record")] = 15.0
    rate: Annotated[
        float, Meta(ge=0, description="bench requests/s during the recording (open model); 0 = closed loop, max rate")
    ] = 0.0
    concurrent_clients: Annotated[int, Meta(ge=1, description="bench clients")] = 64
    gateway_workers: Annotated[int, Meta(ge=1, le=64, description="gateway worker processes")] = 2
    sink_workers: Annotated[int, Meta(ge=1, le=64, description="sink worker processes")] = 2
    partitions: Annotated[int, Meta(ge=1, le=1024, description="partitions per topic")] = 4
    sampling_rate: Annotated[int, Meta(ge=1, le=10_000, description="py-spy samples per second")] = 100
    nonblocking: Annotated[
        bool,
        Meta(description="py-spy --nonblocking: do not pause the target to sample (less overhead, rarer torn stacks)"),
    ] = True
    top: Annotated[int, Meta(ge=1, le=1000, description="rows of the top-functions table")] = 25
    output_directory: Annotated[
        str,
        Meta(description="where the SVG, speedscope JSON and summary go (default: perf/profiles in the source tree)"),
    ] = ""
    log_level: Annotated[LogLevel, Meta(description="log level of the stack's processes")] = "warning"


class CompareSettings(msgspec.Struct, frozen=True, kw_only=True):
    """``perf compare BASELINE.json CURRENT.json``."""

    baseline: Annotated[str, Meta(description="results JSON to compare against (also positional)")]
    current: Annotated[str, Meta(description="results JSON of the new run (also positional)")]
    threshold: Annotated[float, Meta(gt=0, lt=1, description="allowed relative drop of a ratio")] = 0.15
