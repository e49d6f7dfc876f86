"""Settings of a bench run and of ``bench verify``: flag > env var (``FOOTFALL_BENCH_*``) > default."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from footfall.generator import DEFAULT_START_DATE
from footfall.settings import LogLevel

__all__ = ["ENV_PREFIX", "BenchSettings", "VerifySettings"]

ENV_PREFIX = "FOOTFALL_BENCH_"


class BenchSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One load run. Modes: ``--rate R`` (open model) > ``--report-interval 0`` (closed) > ticking."""

    web_service: Annotated[
        str, Meta(description="base URL of the gateway (http or https)", extra={"flag": "--web-service"})
    ] = "http://127.0.0.1:8080"
    concurrent_clients: Annotated[
        int,
        Meta(ge=1, le=1_000_000, description="simulated clients, one userId and one keep-alive connection each"),
    ] = 10
    report_interval: Annotated[
        float,
        Meta(ge=0, description="seconds between a client's days (ticking mode); 0 = closed loop"),
    ] = 1.0
    rate: Annotated[
        float,
        Meta(ge=0, description="open model: requests/s on a fixed schedule, latency from intended send time; 0 = off"),
    ] = 0.0
    duration: Annotated[float, Meta(ge=0, description="stop sending after this many seconds; 0 = no limit")] = 0.0
    requests: Annotated[int, Meta(ge=0, description="stop after this many requests (POSTs) in all; 0 = no limit")] = 0
    processes: Annotated[int, Meta(ge=1, le=256, description="worker processes the clients are spread over")] = 1
    profile: Annotated[
        Literal["original", "realistic"],
        Meta(description="data profile: 'original' (the Go client's distributions) or 'realistic'"),
    ] = "original"
    gzip: Annotated[bool, Meta(description="gzip request bodies (Content-Encoding: gzip)")] = True
    seed: Annotated[int, Meta(ge=-1, description="random seed; same seed, same data; -1 = pick one (printed)")] = -1
    timeout: Annotated[float, Meta(gt=0, description="seconds to wait for a response, connect included")] = 10.0
    retries: Annotated[
        int, Meta(ge=0, le=100, description="retries of a failed request (5xx, 429, transport); honours Retry-After")
    ] = 0
    start_date: Annotated[dt.date, Meta(description="first simulated day (UTC), YYYY-MM-DD")] = DEFAULT_START_DATE
    max_error_rate: Annotated[
        float, Meta(ge=0, le=1, description="exit 1 when failed/finished requests exceed this fraction")
    ] = 0.0
    json: Annotated[str | None, Meta(description="write the run summary and ledger (for 'verify') to this file")] = None
    quiet: Annotated[bool, Meta(description="no live display; a plain progress line every --progress-interval")] = False
    progress_interval: Annotated[
        float, Meta(gt=0, description="seconds between plain progress lines (non-TTY or --quiet)")
    ] = 5.0
    shutdown_timeout: Annotated[
        float, Meta(gt=0, description="seconds to drain in-flight requests after stop (SIGINT/SIGTERM, end of run)")
    ] = 10.0
    log_level: Annotated[LogLevel, Meta(description="log level (JSON lines on stderr)")] = "warning"


class VerifySettings(msgspec.Struct, frozen=True, kw_only=True):
    """``bench verify RUN.json --record-directory DIR``."""

    run_json: Annotated[str, Meta(description="run file written by 'bench --json' (also positional)")]
    # footfall up's default: `footfall bench verify RUN.json` checks what `footfall up` landed.
    record_directory: Annotated[
        str, Meta(description="the sink's record directory (<DIR>/<topic>/date=*/*.jsonl); footfall up's default")
    ] = "footfall-data"
    visit_topic: Annotated[str, Meta(description="topic (directory) holding visits")] = "visit"
    activity_topic: Annotated[str, Meta(description="topic (directory) holding activities")] = "activity"
    partitions: Annotated[
        int | None, Meta(description="partitions of the topics, >= 1 (default: read from the sink's checkpoints)")
    ] = None
    # Its own env var: FOOTFALL_BENCH_JSON names the *run* file, which this must never overwrite.
    json: Annotated[
        str | None,
        Meta(description="also write the result as JSON to this file", extra={"env": "FOOTFALL_BENCH_VERIFY_JSON"}),
    ] = None
