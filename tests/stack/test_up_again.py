"""``footfall up`` run again on a record directory an earlier run (or a user) wrote into.

- An earlier run on more partitions leaves the sink's state of those partitions behind: this
  run's ``bench verify`` must use the partition count the topics have now, or every report of
  this run looks misplaced (and ``up`` said "data loss", exit 4).
- A report sent by hand is no report of any bench run: verify counts it as unexpected (it stays
  strict), and ``up`` says that nothing of its run was lost, instead of blaming the broker.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stack.broker import free_port
from tests.faults.harness import REPO_ROOT, subprocess_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

_PORTS = ("--sink-port", "0", "--dashboard-port", "0")
#: The README's request by hand: one visit of a user no bench made.
_BY_HAND = (
    b'[{"dataVer":1,"userId":"8f0e3c52-5f4a-4f5e-9d3b-2b8f1f3c4d5e","algorithmType":3,"enterTime":1514764800000,'
    b'"exitTime":1514767200000,"poiId":5577006791947779410,"latitude":41.38,"longitude":2.17}]'
)


def _up(records: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["up", "--record-directory", str(records), "--gateway-port", "0", *_PORTS, "--concurrent-clients", "4"]
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", *argv, *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
        env=subprocess_env(),
        check=False,
    )


def test_a_run_on_fewer_partitions_than_the_last_one_verifies_clean(tmp_path: Path) -> None:
    records = tmp_path / "records"
    first = _up(records, "--duration", "3", "--partitions", "4")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert (records / "_footfall" / "checkpoints" / "visit" / "3.json").is_file(), "the first run used 4 partitions"

    second = _up(records, "--duration", "3", "--partitions", "2")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "verify: lost=0 duplicated=0 unexpected=0" in second.stdout
    assert " misplaced=0 " in second.stdout


def test_a_report_sent_by_hand_is_named_as_such_not_as_loss(tmp_path: Path) -> None:
    records = tmp_path / "records"
    port = free_port()
    argv = ["up", "--no-bench", "--record-directory", str(records), "--gateway-port", str(port), *_PORTS]
    running = subprocess.Popen(
        [sys.executable, "-m", "stack.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(),
    )
    try:
        assert running.stdout is not None
        for line in running.stdout:  # started: a Ctrl+C before this line abandons the start-up (exit 130)
            if line.startswith("Ctrl+C stops everything"):
                break
        url = f"http://127.0.0.1:{port}/api/visit/v1"
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        wait_for(lambda: httpx.post(url, content=gzip.compress(_BY_HAND), headers=headers).status_code == 200, 60, url)
        wait_for(lambda: any(records.glob("visit/date=*/*.jsonl")), 30, "the report to land")
        running.send_signal(signal.SIGINT)
        assert running.wait(60) == 0
    finally:
        running.kill()
        running.wait()

    after = _up(records, "--duration", "3")
    assert after.returncode == 4, after.stdout[-2000:] + after.stderr[-2000:]
    assert "verify: lost=0 duplicated=0 unexpected=1" in after.stdout
    lines = after.stderr.strip().splitlines()
    assert any("nothing of this run was lost or duplicated" in line and "by hand" in line for line in lines), lines
    assert not any("embedded broker" in line for line in lines), "no loss to blame on the broker"
