"""The whole pipeline on the embedded broker: bench -> gateway -> broker -> sink -> files.

Real processes, real sockets, real files. The oracle is record by record: what the gateway
acknowledged with 200 is in the files exactly once, and nothing else is.
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from footfall.generator import day_start_ms, original_activities, original_visits, user_id
from footfall.layout import segment_files
from footfall.reports import encode_report
from stack.processes import Stack, StackConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A fresh pipeline per test: verify must see only this test's reports."""
    root = tmp_path_factory.mktemp("pipeline")
    config = StackConfig(
        record_directory=root / "records",
        log_directory=root / "logs",
        dashboard=False,
        sink_args=("--flush-interval", "0.2"),
    )
    with Stack(config) as running:
        yield running


def _landed_lines(records: Path, topic: str) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(path for path, _ in segment_files(records, topic)):
        lines.extend(line for line in path.read_bytes().split(b"\n") if line)
    return lines


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_original_client_form_lands_exactly(stack: Stack) -> None:
    rng = random.Random(20180101)
    uid = user_id(rng)
    day = day_start_ms(__import__("datetime").date(2030, 1, 1), 0)  # a day no other test uses
    visits = original_visits(rng, uid, day)
    activities = original_activities(rng, uid, day)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        body = gzip.compress(b"[" + b",".join(encode_report(v) for v in visits) + b"]")
        assert client.post("/api/visit/v1", content=body, headers=headers).json() == {"accepted": 12}
        body = gzip.compress(b"[" + b",".join(encode_report(a) for a in activities) + b"]")
        response = client.post("/api/activity/v1/", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 12}

    records = stack.config.record_directory
    expected_visits = {encode_report(v) for v in visits}
    expected_activities = {encode_report(a) for a in activities}

    def landed() -> bool:
        return expected_visits <= set(_landed_lines(records, "visit")) and expected_activities <= set(
            _landed_lines(records, "activity")
        )

    _wait(landed, 30, "the 24 reports to land")
    lines = _landed_lines(records, "visit") + _landed_lines(records, "activity")
    mine = [line for line in lines if str(uid).encode() in line]
    assert sorted(mine) == sorted(expected_visits | expected_activities)  # each exactly once


def test_bench_load_lands_exactly_once(stack: Stack, tmp_path: Path) -> None:
    run_json = tmp_path / "run.json"
    result = subprocess.run(
        stack.bench_command(
            "--concurrent-clients",
            "16",
            "--report-interval",
            "0",
            "--duration",
            "4",
            "--seed",
            "7",
            "--json",
            str(run_json),
            "--quiet",
            "--start-date",
            "2019-06-01",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = orjson.loads(run_json.read_bytes())
    assert summary, "bench wrote an empty summary"

    assert stack.wait_landed(timeout=60), "the sink did not land what the gateway accepted"
    assert stack.accepted() > 0
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "verify",
            str(run_json),
            "--record-directory",
            str(stack.config.record_directory),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "lost=0 duplicated=0 unexpected=0" in verify.stdout

    # Independent of bench verify: no record appears twice anywhere in the files.
    for topic in ("visit", "activity"):
        counts = Counter(_landed_lines(stack.config.record_directory, topic))
        assert counts, f"nothing landed in {topic}"
        assert max(counts.values()) == 1


def test_footfall_up_runs_and_leaves_nothing_behind(tmp_path: Path) -> None:
    records = tmp_path / "up-records"
    marker = uuid.uuid4().hex  # find our processes by their command line afterwards
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stack.cli",
            "up",
            "--record-directory",
            str(records),
            "--duration",
            "6",
            "--gateway-port",
            "0",
            "--sink-port",
            "0",
            "--dashboard-port",
            "0",
            "--concurrent-clients",
            "8",
            "--log-directory",
            str(tmp_path / f"logs-{marker}"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "gateway    http://" in out and "dashboard  http://" in out
    assert "lost=0 duplicated=0 unexpected=0" in out, out
    landed = [line for line in out.splitlines() if "landed" in line][-1]
    assert int(landed.split("landed")[1].strip().replace(",", "")) > 0
    assert _pids(str(records)) == [], "role processes left behind"
    broker_pid = int(out.split("embedded, memory only, pid ")[1].split(")")[0])
    assert not Path(f"/proc/{broker_pid}").exists(), "the embedded broker was left behind"


def test_footfall_up_without_the_bench_stops_what_it_started(tmp_path: Path) -> None:
    records = tmp_path / "up-records"
    ports = ["--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "stack.cli", "up", "--no-bench", "--record-directory", str(records), "--duration", "2",
         *ports],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (stopping,) = [line for line in result.stdout.splitlines() if line.startswith("stopping:")]
    assert stopping == "stopping: gateway (drain), then sink (land the rest) ...", "no bench ran, none is stopped"
    assert "bench" not in result.stdout, "a bench named where none ran"
    assert _pids(str(records)) == [], "role processes left behind"


def _pids(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [pid for pid in found.stdout.split() if pid != str(os.getpid())]
