"""Dashboard fixtures: fixture record directories, an in-process API client, a real server process."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from dashboard.store import RollupStore
from tests.dashboard.fixtures import generate, write_segments

REPO = Path(__file__).resolve().parents[2]
START = dt.date(2018, 1, 1)
_names = itertools.count()


@pytest.fixture(scope="session")
def seed() -> int:
    value = int(os.environ.get("FOOTFALL_TEST_SEED", random.randrange(1 << 30)))
    print(f"dashboard fixture seed: {value} (set FOOTFALL_TEST_SEED to reproduce)")
    return value


def make_records(directory: Path, seed: int, users: int = 12, days: int = 3) -> Path:
    """A record directory of original-profile reports (2 partitions, several segments each)."""
    visits, activities = generate(seed, users, days, START)
    write_segments(directory, "visit", visits, per_file=97)
    write_segments(directory, "activity", activities, per_file=89)
    (directory / "_footfall").mkdir(exist_ok=True)
    (directory / "_footfall" / "checkpoint.json").write_text("{}")  # sink state: must be ignored
    return directory


@pytest.fixture
def records(tmp_path: Path, seed: int) -> Path:
    return make_records(tmp_path / "records", seed)


@pytest.fixture
def store(records: Path) -> Iterator[RollupStore]:
    s = RollupStore(records, records / "_footfall" / "dashboard.duckdb", {"visit": "visit", "activity": "activity"})
    with s:
        s.refresh()
        yield s


@pytest.fixture
def api(store: RollupStore) -> Any:
    """A Sanic ASGI test client over ``store`` (already refreshed; no background loop)."""
    settings = DashboardSettings(record_directory=str(store.record_directory))
    app = create_app(settings, store=store, refresher=False, name=f"dash-test-{next(_names)}")
    return app.asgi_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    record_directory: Path
    log: Path

    def stop(self) -> int:
        """SIGTERM, then wait: the process contract says exit 0 within the shutdown timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return int(self.process.returncode)


def start_server(record_directory: Path, *extra: str) -> Server:
    """``python -m dashboard`` on a free port; returns once /readyz answers 200."""
    port = free_port()
    log_path = record_directory.parent / f"dashboard-{port}.log"
    log = log_path.open("wb")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dashboard",
            "--record-directory",
            str(record_directory),
            "--port",
            str(port),
            "--refresh-interval",
            "0.5",
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the child has its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"dashboard exited with {process.returncode} before becoming ready: {log_path.read_text()[-2000:]}"
            )
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return Server(url, process, record_directory, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise TimeoutError("dashboard not ready within 30 s")


@pytest.fixture
def server_factory() -> Iterator[Any]:
    started: list[Server] = []

    def factory(record_directory: Path, *extra: str) -> Server:
        server = start_server(record_directory, *extra)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
