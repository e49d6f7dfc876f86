"""The dashboard's exposure (loopback by default, optional basic auth, bound SQL parameters) and path safety.

The dashboard runs as ``python -m dashboard`` with no ``--host`` (its default must be
loopback). Query strings are fuzzed with Hypothesis: a parameter meant for SQL must be
refused with a 4xx or bound, never run, and never give a 5xx. Topic names become
directory names, so every role must refuse one that would leave the record directory.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from stack.broker import free_port
from tests.faults.harness import subprocess_env, wait_for
from tests.security.conftest import DASHBOARD_AUTH, Response, raw_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FUZZ_SEED = int(os.environ.get("FOOTFALL_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
_ENDPOINTS = [
    "/api/v1/summary", "/api/v1/timeseries", "/api/v1/activity-types", "/api/v1/algorithm-types",
    "/api/v1/visit-durations", "/api/v1/top-pois", "/api/v1/geo", "/api/v1/unique-users",
]  # fmt: skip
_PARAMS = ["from", "to", "type", "bucket", "by", "limit", "cell"]
_NASTY = [
    "'; DROP TABLE visits; --", "1 OR 1=1", "1; SELECT * FROM read_csv('/etc/passwd')", "²", "١٢", "-0", "1e3",
    "9" * 400, "", " ", "\x00", "%", "2018-01-01T00:00:00Z", "2018-13-45", "visit", "activity", "all", "day",
    "../../etc/passwd", "0x10", "+5", "1_000", "NaN", "inf", "\u202e", "users", "visits",
]  # fmt: skip


@dataclass
class Dashboard:
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str, auth: tuple[str, str] | None = DASHBOARD_AUTH) -> Response:
        headers = "Host: 127.0.0.1\r\n"
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers += f"Authorization: Basic {token}\r\n"
        response = raw_request(self.port, f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode(), timeout=20)
        assert response is not None, f"no answer to GET {path}"
        return response

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    log_path = root / "dashboard.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "dashboard", "--record-directory", str(root / "records"), "--port", str(port),
                "--auth", ":".join(DASHBOARD_AUTH), "--log-level", "debug",
            ],
            stdout=log_file, stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True,
        )  # fmt: skip
    target = Dashboard(port, log_path, proc)
    try:
        wait_for(lambda: target.get("/readyz", auth=None).status == 200, 60, "the dashboard to be ready")
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6), as hex."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                    found.add(address)
    return found


def test_dashboard_listens_on_loopback_only_by_default(dashboard: Dashboard) -> None:
    addresses = _listening_addresses(dashboard.port)
    assert addresses, "the dashboard listens nowhere?"
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1
    assert addresses <= loopback, f"the dashboard listens beyond loopback: {addresses}"


def test_dashboard_auth_guards_everything_but_the_probes(dashboard: Dashboard) -> None:
    user, password = DASHBOARD_AUTH
    for path in ["/", "/api/v1/summary", "/metrics", "/static/vendor/echarts/LICENSE"]:
        assert dashboard.get(path, auth=None).status == 401, path
        assert dashboard.get(path, auth=(user, password + "x")).status == 401, path
        assert dashboard.get(path, auth=(user + "x", password)).status == 401, path
    assert dashboard.get("/api/v1/summary").status == 200
    assert dashboard.get("/healthz", auth=None).status == 200
    assert dashboard.get("/readyz", auth=None).status == 200
    assert password not in dashboard.log(), "the dashboard password was written to its log"


def test_dashboard_query_parameters_are_never_sql(dashboard: Dashboard) -> None:
    """Fuzzed query strings: 200 or a 4xx with a message, never a 5xx; the rollups survive every attempt."""
    print(f"fuzz seed: {FUZZ_SEED} (replay with FOOTFALL_FUZZ_SEED={FUZZ_SEED})")
    statuses: dict[int, int] = {}
    values = st.one_of(st.sampled_from(_NASTY), st.text(max_size=30))

    @seed(FUZZ_SEED)
    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        endpoint=st.sampled_from(_ENDPOINTS),
        params=st.lists(st.tuples(st.one_of(st.sampled_from(_PARAMS), st.text(max_size=10)), values), max_size=4),
    )
    def attack(endpoint: str, params: list[tuple[str, str]]) -> None:
        query = urllib.parse.urlencode(params)
        response = dashboard.get(f"{endpoint}?{query}" if query else endpoint)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status < 500, (endpoint, params, response.status, response.body[:300])

    attack()
    print(f"statuses: {statuses}")
    assert dashboard.proc.poll() is None
    assert dashboard.get("/api/v1/summary").status == 200


def test_dashboard_nasty_parameter_values_get_a_4xx(dashboard: Dashboard) -> None:
    """Every parameter with every value of a fixed list of nasty ones (the fuzz test's seeds, made certain)."""
    failures = []
    for endpoint in ("/api/v1/timeseries", "/api/v1/top-pois", "/api/v1/geo"):
        for name in _PARAMS:
            for value in _NASTY:
                query = urllib.parse.urlencode([(name, value)])
                response = dashboard.get(f"{endpoint}?{query}")
                if response.status >= 500:
                    failures.append(f"{endpoint}?{query} -> {response.status}")
    assert not failures, f"{len(failures)} server errors, e.g. {failures[:5]}"
    assert dashboard.get("/api/v1/summary").status == 200


@pytest.mark.parametrize(
    ("role", "args"),
    [
        ("gateway", ["--visit-topic", "../escape"]),
        ("gateway", ["--activity-topic", ".."]),
        ("sink", ["--groups", "g:../../escape", "--record-directory", "{records}"]),
        ("sink", ["--groups", "g:a/b", "--record-directory", "{records}"]),
        ("dashboard", ["--record-directory", "{records}", "--visit-topic", "../escape"]),
        ("bench", ["verify", "{run}", "--record-directory", "{records}", "--visit-topic", "../escape"]),
    ],
)
def test_topic_names_that_leave_the_record_directory_are_refused(role: str, args: list[str], tmp_path: Path) -> None:
    """A topic name is a directory name: ``..`` or a slash is a one-line error (exit 2), before anything runs."""
    records = tmp_path / "sub" / "records"
    run = tmp_path / "run.json"
    run.write_text("{}")
    argv = [a.format(records=records, run=run) for a in args]
    done = subprocess.run(
        [sys.executable, "-m", role, "--brokers", "127.0.0.1:1", *argv] if role in {"gateway", "sink"}
        else [sys.executable, "-m", role, *argv],
        capture_output=True, text=True, timeout=60, env=subprocess_env(), check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, f"{role} {argv}: exit {done.returncode}\n{output[-2000:]}"
    assert "topic" in output.lower(), output[-2000:]
    assert not (tmp_path / "escape").exists() and not (tmp_path / "sub" / "escape").exists()
    assert "Traceback" not in output, output[-2000:]
