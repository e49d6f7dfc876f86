"""``footfall up`` end to end: its exit code tells the truth about what landed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stack.up import EXIT_OK

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def up(record_directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stack.cli",
            "up",
            "--record-directory",
            str(record_directory),
            "--gateway-port",
            "0",
            "--sink-port",
            "0",
            "--dashboard-port",
            "0",
            "--concurrent-clients",
            "4",
            "--duration",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_up_twice_on_one_directory_gives_two_clean_verifies(tmp_path: Path) -> None:
    """The memory-only broker starts at offset 0 again under the first run's checkpoints."""
    for run in (1, 2):
        out = up(tmp_path)
        verify = [line for line in out.stdout.splitlines() if line.startswith("  verify: ")]
        assert out.returncode == EXIT_OK, f"run {run}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
        assert len(verify) == 1 and "lost=0 duplicated=0 unexpected=0" in verify[0], out.stdout
        assert "\r" not in out.stdout, "no carriage returns when stdout is not a terminal"
