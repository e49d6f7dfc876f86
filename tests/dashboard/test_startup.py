"""Start-up refusals of ``python -m dashboard``, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import REPO, free_port, make_records
from tests.faults.harness import logged_port, wait_for


def _second_dashboard(record_directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    port = str(free_port())
    return subprocess.run(
        [sys.executable, "-m", "dashboard", "--record-directory", str(record_directory), "--port", port, *extra],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("state_dir", [False, True], ids=["default-state-dir", "given-state-dir"])
def test_a_database_another_dashboard_holds_is_one_line_and_exit_1(
    server_factory: Any, tmp_path: Path, seed: int, state_dir: bool
) -> None:
    records = make_records(tmp_path / "records", seed, users=2, days=1)
    state = tmp_path / "state"
    extra = ("--state-dir", str(state)) if state_dir else ()
    first = server_factory(records, *extra)

    second = _second_dashboard(records, *extra)

    flag = "--state-dir" if state_dir else "--record-directory"
    database = (state if state_dir else records / "_footfall") / "dashboard.duckdb"
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"error: {flag}: another dashboard (pid {first.process.pid}: python -m dashboard"), lines
    assert f" holds {database}; " in lines[0]
    assert lines[0].endswith("stop it, or give this dashboard its own --state-dir")
    # The first one is untouched and still serving.
    assert httpx.get(first.url + "/readyz", timeout=5).status_code == 200


def test_port_0_listens_on_a_free_port_and_logs_which(tmp_path: Path, seed: int) -> None:
    """Sanic reads port 0 as "no port" and listens on 8000; the dashboard binds it itself."""
    records = make_records(tmp_path / "records", seed, users=1, days=1)
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "--record-directory", str(records), "--port", "0"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        port = logged_port(log, proc, "dashboard starting")
        assert port not in (0, 8000)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, "the dashboard")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
