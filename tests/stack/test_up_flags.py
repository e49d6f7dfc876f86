"""`footfall up` refuses flags that parse but cannot work before it starts anything (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--brokers", "garbage"], "footfall up: --brokers: 'garbage' is not host:port (e.g. 127.0.0.1:9092)"),
        (
            ["--brokers", "127.0.0.1:99999"],
            "footfall up: --brokers: '127.0.0.1:99999' is not host:port (e.g. 127.0.0.1:9092)",
        ),
        (
            ["--record-directory="],
            "footfall up: --record-directory is empty; give a directory (default: footfall-data)",
        ),
    ],
)
def test_unusable_flag_values_exit_2_before_anything_starts(tmp_path: Path, flags: list[str], line: str) -> None:
    argv = ["up", "--record-directory", str(tmp_path / "records"), *flags]
    done = subprocess.run(
        [sys.executable, "-m", "stack.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [line]
    assert done.stdout == ""  # nothing was started: no "starting broker ..." line
    assert list(tmp_path.iterdir()) == []  # and nothing was written, not even the record directory


def test_a_second_up_on_a_directory_in_use_stops_before_starting_anything(tmp_path: Path) -> None:
    records = tmp_path / "records"
    holder = subprocess.Popen(  # stands in for the first `footfall up`: it takes the same lock the same way
        [sys.executable, "-c", "import sys, pathlib, stack.up as up; up._claim(pathlib.Path(sys.argv[1])); "
         "print('held', flush=True); sys.stdin.read()", str(records)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        argv = ["up", "--record-directory", str(records), "--gateway-port", "0", "--sink-port", "0",
                "--dashboard-port", "0"]  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "stack.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 3
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"footfall up: --record-directory: another footfall up (pid {holder.pid}")
        assert line.endswith(f"is using {records}; stop it, or give this one another --record-directory")
        assert "starting" not in done.stdout
    finally:
        holder.kill()
        holder.wait()
    # The lock goes with its process: the directory is free again.
    again = subprocess.run(
        [sys.executable, "-c", "import sys, pathlib, stack.up as up; up._claim(pathlib.Path(sys.argv[1]))",
         str(records)], cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0
