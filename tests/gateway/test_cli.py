"""Flags and env vars: precedence, and a one-line error naming the flag (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from footfall.errors import ConfigError
from gateway.__main__ import main
from gateway.settings import parse_gateway_settings
from tests.gateway.conftest import ROOT


def test_defaults_and_env_precedence() -> None:
    s = parse_gateway_settings([], environ={})
    assert (s.workers, s.acks, s.idempotence, s.compression, s.access_log) == (0, "all", "auto", "none", False)
    assert s.worker_count >= 1
    env = {"FOOTFALL_GATEWAY_PORT": "9000", "FOOTFALL_BROKERS": "k:1", "FOOTFALL_GATEWAY_API_KEYS": "a,b"}
    s = parse_gateway_settings(["--port", "9001"], environ=env)
    assert (s.port, s.brokers, s.api_keys) == (9001, "k:1", ["a", "b"])
    s = parse_gateway_settings(["--api-key", "x", "--api-key", "y", "--cors-origin", "*", "--access-log"], environ={})
    assert (s.api_keys, s.cors_origins, s.access_log) == (["x", "y"], ["*"], True)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--port", "abc"], "--port"),
        (["--port", "70000"], "--port"),
        (["--workers", "-1"], "--workers"),
        (["--max-inflight-bytes", "1"], "--max-inflight-bytes"),
        (["--brokers", "nohost"], "--brokers"),
        (["--visit-topic", "a/b"], "--visit-topic"),
        (["--visit-topic", "same", "--activity-topic", "same"], "--activity-topic"),
        (["--linger-ms", "-5"], "--linger-ms"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse_gateway_settings(argv, environ={})
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and flag in err, err


def test_bad_env_names_flag_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="FOOTFALL_GATEWAY_PORT"):
        parse_gateway_settings([], environ={"FOOTFALL_GATEWAY_PORT": "x"})


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--compression", "snappy"], "--compression"),
        (["--idempotence", "maybe"], "--idempotence"),
        (["--bogus"], "--bogus"),
        (["--produce-mode", "per-report"], "--produce-mode"),  # a perf reference now: perf/references/per_report.py
    ],
)
def test_process_exit_code_2(argv: list[str], flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert flag in proc.stderr.strip().splitlines()[-1]
