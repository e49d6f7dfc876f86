"""``python -m bench``: one-line errors, exit codes, the run file, verify's output, graceful stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from bench.settings import VerifySettings
from footfall.layout import segment_files
from stack.up import UpSettings
from tests.bench.fake_gateway import FakeGateway

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrent-clients", "0"], "--concurrent-clients (env FOOTFALL_BENCH_CONCURRENT_CLIENTS)"),
        (["--rate", "fast"], "--rate (env FOOTFALL_BENCH_RATE)"),
        (["--start-date", "2018-13-01"], "--start-date (env FOOTFALL_BENCH_START_DATE)"),
        (["--web-service", "localhost:8080"], "--web-service (env FOOTFALL_BENCH_WEB_SERVICE)"),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], message: str) -> None:
    out = bench(*args)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if not line.startswith("bench: seed")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_env_var_is_read() -> None:
    env_out = subprocess.run(
        [sys.executable, "-m", "bench"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), FOOTFALL_BENCH_PROCESSES="-1"),
        timeout=60,
    )
    assert env_out.returncode == 2 and "--processes (env FOOTFALL_BENCH_PROCESSES)" in env_out.stderr


def test_unreachable_web_service_is_a_one_line_error() -> None:
    out = bench("--web-service", f"http://127.0.0.1:{free_port()}", "--requests", "1")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the web service" in errors[0], out.stderr


def test_run_file_and_verify_cli(tmp_path: Path) -> None:
    run_file = tmp_path / "run.json"
    records = tmp_path / "records"
    with FakeGateway(record_directory=records) as gw:
        out = bench("--web-service", gw.url, "--report-interval", "0", "--requests", "20", "--seed", "11",
                    "--json", str(run_file), "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "seed 11" in out.stderr
    assert "footfall bench" in out.stdout and "p99.9" in out.stdout
    content = msgspec.json.decode(run_file.read_bytes())
    assert content["format"] == "footfall-bench-run" and content["version"] == 2
    assert re.fullmatch(r"[0-9a-f]{12}", content["run_id"]), content["run_id"]
    assert content["seed"] == 11 and content["settings"]["seed"] == 11
    assert content["counts"]["requests"] == 20 and content["counts"]["reports_acked"] == 240
    assert set(content["latency_ms"]) == {"count", "p50", "p90", "p99", "p99.9", "max", "mean"}
    assert {"requests_per_s", "reports_per_s", "mbytes_per_s"} <= set(content["throughput"])
    assert {"python", "msgspec", "hdrhistogram", "footfall"} <= set(content["versions"])

    ok = bench("verify", str(run_file), "--record-directory", str(records))
    assert ok.returncode == 0 and ok.stdout.startswith("lost=0 duplicated=0 unexpected=0"), ok.stdout + ok.stderr
    assert "no segment files" not in ok.stderr

    (tmp_path / "empty").mkdir()
    elsewhere = bench("verify", str(run_file), "--record-directory", str(tmp_path / "empty"))
    assert elsewhere.returncode == 1 and elsewhere.stdout.startswith("lost=240 "), elsewhere.stdout
    assert f"no segment files under {tmp_path / 'empty'}" in elsewhere.stderr  # a wrong directory, perhaps

    segment, _ = next(segment_files(records, "visit"))
    segment.write_bytes(b"".join(segment.read_bytes().splitlines(keepends=True)[1:]))
    bad = bench("verify", "--record-directory", str(records), str(run_file), "--json", str(tmp_path / "v.json"))
    assert bad.returncode == 1 and bad.stdout.startswith("lost=1 duplicated=0 unexpected=0"), bad.stdout
    assert msgspec.json.decode((tmp_path / "v.json").read_bytes())["ok"] is False

    missing = bench("verify", str(tmp_path / "nope.json"), "--record-directory", str(records))
    assert missing.returncode == 2 and missing.stderr.startswith("error: run file")
    assert "Traceback" not in missing.stderr


def test_error_rate_above_the_limit_exits_1() -> None:
    with FakeGateway(fail=lambda n, _t: (500, False) if n % 2 else None) as gw:
        out = bench("--web-service", gw.url, "--report-interval", "0", "--requests", "10", "--quiet")
        assert out.returncode == 1 and "exceeds --max-error-rate" in out.stderr
        tolerant = bench("--web-service", gw.url, "--report-interval", "0", "--requests", "10", "--quiet",
                         "--max-error-rate", "0.6")  # fmt: skip
        assert tolerant.returncode == 0, tolerant.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_sigterm_stops_gracefully_and_writes_the_run_file(tmp_path: Path, processes: str) -> None:
    run_file = tmp_path / "run.json"
    with FakeGateway(record_directory=tmp_path / "records") as gw:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", "--web-service", gw.url, "--concurrent-clients", "2",
             "--report-interval", "0.05", "--processes", processes, "--json", str(run_file), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while gw.requests < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    content = msgspec.json.decode(run_file.read_bytes())
    assert content["interrupted"] is True and content["counts"]["ok"] >= 10
    from bench.verify import verify

    assert verify(run_file, tmp_path / "records").ok


def test_plain_progress_lines_when_not_a_tty() -> None:
    with FakeGateway() as gw:
        out = bench("--web-service", gw.url, "--report-interval", "0.05", "--duration", "1",
                    "--progress-interval", "0.3")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "req/s" in line]
    assert len(lines) >= 2, out.stderr  # stderr is a pipe here: plain lines, no rich live display
    assert "p99" in lines[-1] and "in flight" in lines[-1]
    assert "\x1b[" not in out.stderr


def test_verify_refuses_an_unwritable_json_path_before_verifying(tmp_path: Path) -> None:
    """The result is written last: a --json path that cannot be written fails at once, in one line."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run_file, result_file = str(tmp_path / "run.json"), str(blocker / "v.json")
    out = bench("verify", run_file, "--record-directory", str(tmp_path), "--json", result_file)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: --json: cannot write to '{blocker}': it exists and is not a directory; pick another path"
    ], out.stderr
    assert "Traceback" not in out.stderr
    assert "verify:" not in out.stdout  # nothing was verified first


def test_verify_reads_footfall_ups_record_directory_by_default() -> None:
    """``footfall up`` then ``footfall bench verify RUN.json``: the same directory without a flag."""
    verify_default = VerifySettings(run_json="run.json").record_directory
    assert verify_default == UpSettings().record_directory == "footfall-data"
    out = bench("verify", "--help")
    assert "default footfall-data]" in " ".join(out.stdout.split()), out.stdout
