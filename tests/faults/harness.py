"""The fault suite's tools: a seeded fault log, the bench as a subprocess, settle-then-verify, processes, mounts.

Every scenario follows the same shape::

    stack = faults.stack()                       # broker + gateway + sink on free ports
    run = faults.bench(stack, duration=20)       # bench load in the background (a subprocess)
    ... inject a fault at a seeded moment, recover ...
    run.wait()                                   # the bench stops by itself (--duration)
    result = faults.settle_and_verify(stack, run)
    result.assert_exact()                        # lost=0 duplicated=0 unexpected=0

The oracle is ``bench verify``: every report the gateway answered 2xx for is in the files
exactly once, and nothing the bench did not send is there. Nothing here sleeps to wait for
something: conditions are polled with a deadline (:func:`wait_for`).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from footfall.layout import segment_files
from stack.kafka import KafkaCluster
from stack.processes import Stack

REPO_ROOT = Path(__file__).resolve().parents[2]
_VERIFY_RE = re.compile(r"lost=(\d+)\s+duplicated=(\d+)\s+unexpected=(\d+)")
# The errors besides lost/duplicated/unexpected: a report changed, in the wrong place, or out of order.
_VERIFY_OTHER_RE = re.compile(r"altered=(\d+)\s+misplaced=(\d+)\s+out_of_order=(\d+)")


def subprocess_env() -> dict[str, str]:
    """The environment for ``python -m bench``: the repository on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it is true; ``AssertionError`` naming ``what`` after ``timeout`` s.

    Exceptions from ``condition`` (a process not listening yet) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            if condition():
                return
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {last!r})" if last else "")
            )
        time.sleep(interval)


# -- the fault log -----------------------------------------------------------------------------


@dataclass
class FaultLog:
    """Prints (and keeps) every injected fault with its time since the scenario started and the seed."""

    seed: int
    path: Path | None = None
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)

    def __call__(self, what: str) -> None:
        line = f"[fault seed={self.seed} t=+{time.monotonic() - self.started:6.2f}s] {what}"
        self.events.append(line)
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(line + "\n")


# -- processes -----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return [raw[: raw.index(" ")], raw[raw.index("(") : raw.rindex(")") + 1], *raw[raw.rindex(")") + 2 :].split()]


def logged_port(log: Path, proc: subprocess.Popen[bytes], message: str, timeout: float = 30.0) -> int:
    """The ``"port"`` of the first JSON log line ``message`` in ``log``, once ``proc`` wrote it."""
    pattern = re.compile(rf'"message":"{re.escape(message)}".*?"port":(\d+)')
    deadline = time.monotonic() + timeout
    while not (found := pattern.search(log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, f"no {message!r} line:\n{log.read_text()[-2000:]}"
        time.sleep(0.05)
    return int(found[1])


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[2] not in {"Z", "X"}


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[3] == str(pid) and stat[2] not in {"Z", "X"}:
                out.append(int(entry.name))
    return sorted(out)


def group_pids(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (a role and all its workers: Stack starts each in its own session)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[4] == str(pgid) and stat[2] not in {"Z", "X"}:
                out.append(int(entry.name))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def role_rss(stack: Stack, role: str) -> int:
    """RSS of ``role``'s whole process group (parent and workers), in bytes."""
    return sum(rss_bytes(pid) for pid in group_pids(stack.processes[role].pid))


# -- the bench as a subprocess -----------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    lost: int
    duplicated: int
    unexpected: int
    output: str
    altered: int = 0
    misplaced: int = 0
    out_of_order: int = 0

    @property
    def exact(self) -> bool:
        return (
            self.lost
            == self.duplicated
            == self.unexpected
            == self.altered
            == self.misplaced
            == 0
            == (self.out_of_order)
        )

    def assert_exact(self, context: str = "", probes_landed: int = 0) -> None:
        """lost=0 duplicated=0 unexpected=0; ``probes_landed`` lines the test itself posted outside the
        bench (unacknowledged probes, which may land) are the only unexpected lines allowed."""
        ok = self.lost == 0 and self.duplicated == 0 and self.unexpected == probes_landed
        ok = ok and self.altered == self.misplaced == self.out_of_order == 0
        assert ok, (
            f"bench verify: lost={self.lost} duplicated={self.duplicated} unexpected={self.unexpected} "
            f"altered={self.altered} misplaced={self.misplaced} out_of_order={self.out_of_order}\n"
            f" (test probes landed: {probes_landed})\n{self.output[-3000:]}\n{context}"
        )


def count_lines_containing(record_directory: Path, needle: bytes) -> int:
    """Landed lines (any topic) containing ``needle``, e.g. a probe's userId."""
    total = 0
    for path, _name in segment_files(record_directory):
        total += sum(1 for line in path.read_bytes().split(b"\n") if needle in line)
    return total


#: The userId of :func:`post_probe`'s report: not a bench user, so verify counts it as unexpected.
PROBE_USER = b"00000000-0000-4000-8000-0000000000ff"
_PROBE_VISIT = (
    b'[{"dataVer":1,"userId":"' + PROBE_USER + b'","algorithmType":1,"enterTime":1514764800000,'
    b'"exitTime":1514767200000,"poiId":1,"latitude":1.0,"longitude":2.0}]'
)


def post_probe(gateway_url: str, timeout: float) -> tuple[int, dict[str, str]]:
    """POST one visit report of :data:`PROBE_USER` outside the bench: (status, response headers).

    A probe answered 503 may still land later (its batch was in flight), at most once:
    count it with :func:`count_lines_containing` and pass that to ``assert_exact``.
    """
    request = urllib.request.Request(
        f"{gateway_url}/api/visit/v1", data=_PROBE_VISIT, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


class BenchRun:
    """``python -m bench ... --json RUN.json`` running in the background for a bounded time."""

    def __init__(self, stack: Stack, run_json: Path, args: Sequence[str], log_path: Path, duration: float) -> None:
        self.stack = stack
        self.run_json = run_json
        self.log_path = log_path
        self.duration = duration
        self.command = stack.bench_command(*args, "--json", str(run_json))
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=subprocess_env(),
                start_new_session=True,
            )
        self.started = time.monotonic()

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else "(no log)"

    def wait(self, grace: float = 60.0) -> dict[str, Any]:
        """Wait for the bench to finish (its ``--duration`` plus ``grace``); returns the run summary.

        The bench exits 1 when requests failed (``--max-error-rate``); under faults that is
        expected, so only a crash (any other code) or a missing run file fails here.
        """
        remaining = self.duration + grace - (time.monotonic() - self.started)
        try:
            code = self.proc.wait(max(remaining, 1.0))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"bench did not stop within {self.duration + grace:g}s:\n{self.log_tail()}") from None
        assert code in (0, 1), f"bench exited with {code}:\n{self.log_tail()}"
        assert self.run_json.exists(), f"bench wrote no run file {self.run_json}:\n{self.log_tail()}"
        summary: dict[str, Any] = orjson.loads(self.run_json.read_bytes())
        return summary

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_verify(run_json: Path, record_directory: Path, *args: str, timeout: float = 120.0) -> VerifyResult:
    """``python -m bench verify RUN.json --record-directory DIR ARGS...``, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "verify", str(run_json), "--record-directory", str(record_directory), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        check=False,
    )
    output = done.stdout + done.stderr
    m = _VERIFY_RE.search(output)
    assert m is not None, f"bench verify printed no result (exit {done.returncode}):\n{output[-3000:]}"
    other = _VERIFY_OTHER_RE.search(output)
    assert other is not None, f"bench verify printed no altered/misplaced/out_of_order:\n{output[-3000:]}"
    result = VerifyResult(int(m[1]), int(m[2]), int(m[3]), output, int(other[1]), int(other[2]), int(other[3]))
    # Exit 0 exactly when every error counter is zero (the bench CLI contract).
    assert (done.returncode == 0) == result.exact, f"bench verify exit {done.returncode} disagrees:\n{output[-3000:]}"
    return result


# -- mounts (root only) ------------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=30)


def require_root() -> None:
    """Skip (with the reason) unless this process may mount file systems."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a tmpfs, a read-only bind mount or a FUSE file system as the record directory")


def mount_tmpfs(path: Path, size: str) -> None:
    """``mount -t tmpfs -o size=SIZE tmpfs PATH``; ``PermissionError`` if this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        raise PermissionError(f"mount -t tmpfs failed: {done.stderr.strip()}")


def bind_read_only(path: Path) -> None:
    """Turn ``path`` read-only for everyone, root included: a read-only bind mount of itself over it.

    Creating, renaming and removing files under ``path`` then fail with EROFS. Files that
    were already open for writing keep their descriptors (the kernel refuses a read-only
    remount of a file system with open writers, EBUSY), so the first failures are the
    sink's new files and atomic checkpoint replaces.
    """
    for argv in (("mount", "--bind", str(path), str(path)), ("mount", "-o", "remount,bind,ro", str(path))):
        done = _run(*argv)
        if done.returncode != 0:
            raise PermissionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def bind_read_write(path: Path) -> None:
    """Undo :func:`bind_read_only`'s read-only flag (the bind mount stays until :func:`unmount_all`)."""
    done = _run("mount", "-o", "remount,bind,rw", str(path))
    assert done.returncode == 0, f"remount rw failed: {done.stderr.strip()}"


def mounted(path: Path) -> bool:
    target = str(path.resolve())
    with Path("/proc/self/mounts").open() as f:
        return any(line.split()[1] == target for line in f)


def unmount_all(path: Path, timeout: float = 10.0) -> None:
    """Unmount every layer mounted on ``path``; lazily (``umount -l``) if still busy at the deadline."""
    deadline = time.monotonic() + timeout
    while mounted(path):
        if _run("umount", str(path)).returncode != 0:
            if time.monotonic() >= deadline:
                _run("umount", "-l", str(path))
            else:
                time.sleep(0.1)


def fill(path: Path, chunk: int = 64 * 1024) -> Path:
    """Write a filler file under ``path`` until the file system is full (ENOSPC); returns the file."""
    filler = path / "_footfall_fault_filler"
    # Unbuffered: a buffered file would raise ENOSPC again when closed, flushing what did not fit.
    with filler.open("ab", buffering=0) as f:
        for size in (chunk, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return filler


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@contextlib.contextmanager
def continued(pid: int) -> Iterator[None]:
    """SIGCONT ``pid`` on the way out, whatever happened (a paused process must never outlive a test)."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# -- one scenario's resources --------------------------------------------------------------------


class Scenario:
    """A fault scenario's seed, log, stacks and clean-ups (the ``faults`` fixture).

    Clean-ups run last-registered-first in :meth:`close`, so a mount registered before a
    stack is unmounted after that stack stopped, and a SIGCONT registered after it runs
    before it is stopped.
    """

    def __init__(self, seed: int, root: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log = FaultLog(seed, self.logs / "faults.log")
        self.stacks: list[Stack] = []
        self._exit = contextlib.ExitStack()
        self._benches = 0

    def defer(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` when the scenario ends (pass or fail)."""
        self._exit.callback(callback, *args)

    def stack(
        self,
        *,
        record_directory: Path | None = None,
        start: bool = True,
        sink_args: Sequence[str] = (),
        gateway_args: Sequence[str] = (),
        **config: Any,
    ) -> Stack:
        """A ``Stack`` (embedded broker, gateway, sink; no dashboard) logging under the scenario's root."""
        from stack.processes import StackConfig

        stack = Stack(
            StackConfig(
                record_directory=record_directory or self.root / "records",
                log_directory=self.logs,
                dashboard=config.pop("dashboard", False),
                # Short flush interval: records land (and verify can settle) soon after the load stops.
                sink_args=("--flush-interval", "0.2", *sink_args),
                gateway_args=tuple(gateway_args),
                **config,
            )
        )
        self.stacks.append(stack)
        self._exit.callback(stack.stop)
        if start:
            stack.start()
            self.log(f"stack up: broker {stack.bootstrap}, gateway {stack.gateway_url}, sink {stack.sink_url}")
        return stack

    def bench(
        self,
        stack: Stack,
        *,
        duration: float,
        rate: float = 40.0,
        clients: int = 16,
        retries: int = 30,
        timeout: float = 10.0,
        extra: Sequence[str] = (),
    ) -> BenchRun:
        """Start an open-model bench load (``--rate``) for ``duration`` seconds, seeded from the scenario.

        Failed requests (503 while a fault lasts, a connection reset by a killed worker) are
        retried with backoff; the ledger marks days whose attempts failed, so verify knows
        their reports may have landed without a 2xx.
        """
        self._benches += 1
        run_json = self.root / f"run-{self._benches}.json"
        args = [
            "--concurrent-clients", str(clients),
            "--report-interval", "0",
            "--rate", f"{rate:g}",
            "--duration", f"{duration:g}",
            "--seed", str(self.seed + self._benches),
            "--retries", str(retries),
            "--timeout", f"{timeout:g}",
            "--max-error-rate", "1",
            "--quiet",
        ]  # fmt: skip
        run = BenchRun(stack, run_json, [*args, *extra], self.logs / f"bench-{self._benches}.log", duration)
        self._exit.callback(run.kill)
        self.log(
            f"bench started: {clients} clients, {rate:g} requests/s for {duration:g}s, seed {self.seed + self._benches}"
        )
        return run

    def settle_and_verify(self, stack: Stack, run: BenchRun, timeout: float = 90.0) -> VerifyResult:
        """Wait for the pipeline to land what was acknowledged, then run ``bench verify``.

        Polls until ``bench verify`` finds nothing lost, checking early whenever the sink's
        landed counter reaches the gateway's accepted counter and at least every 3 s
        otherwise: the counters alone cannot decide (a restarted sink counts from zero, and a
        gateway worker's counter reaches ``/metrics`` up to a second late). Returns the last
        result for the caller to assert; it never waits longer than ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last_verify = 0.0
        while True:
            try:
                accepted, landed = stack.accepted(), stack.landed()
            except OSError:
                accepted = landed = float("nan")
            now = time.monotonic()
            if landed >= accepted or now - last_verify >= 3.0 or now >= deadline:
                result = run_verify(run.run_json, stack.config.record_directory, *_topic_args(stack))
                last_verify = time.monotonic()
                if result.lost == 0 or last_verify >= deadline:
                    break
            time.sleep(0.25)
        self.log(f"settled: gateway accepted {accepted:.0f}, sink landed {landed:.0f} (this sink process)")
        self.log(f"verify: lost={result.lost} duplicated={result.duplicated} unexpected={result.unexpected}")
        return result

    def broker_pid(self, stack: Stack) -> int:
        """The pid of ``stack``'s broker, to pause or kill (the embedded broker it started)."""
        assert stack.broker is not None, "this stack runs on brokers it did not start"
        return stack.broker.pid

    def diagnostics(self) -> str:
        """The end of every role's log (for a failed scenario)."""
        parts = [*self.log.events]
        for stack in self.stacks:
            for role in ("gateway", "sink", "dashboard"):
                if (stack.log_directory / f"{role}.log").exists():
                    parts.append(f"--- {role}.log (tail)\n{stack.log_tail(role, 4000)}")
        return "\n".join(parts)

    def close(self) -> None:
        self._exit.close()


def _topic_args(stack: Stack) -> list[str]:
    """``bench verify``'s topic options for ``stack`` (the Kafka scenarios use topics of their own)."""
    return ["--visit-topic", stack.config.visit_topic, "--activity-topic", stack.config.activity_topic]


class KafkaScenario(Scenario):
    """A fault ``Scenario`` whose stacks run on the session's Apache Kafka cluster (``--broker kafka*``)."""

    def __init__(self, seed: int, root: Path, cluster: KafkaCluster) -> None:
        super().__init__(seed, root)
        self.cluster = cluster

    def stack(self, **config: Any) -> Stack:
        """A stack on the cluster, with its own topics and sink group (RF as the cluster's).

        The sink's ``.retry``/``.dlq`` topics get the cluster's RF too: with RF 1 a dead node takes
        its side partitions offline, and their recovery waits for that node (seen in scenario f).
        """
        suffix = uuid.uuid4().hex[:8]
        config.setdefault("visit_topic", f"visit-{suffix}")
        config.setdefault("activity_topic", f"activity-{suffix}")
        config.setdefault("group", f"footfall-sink-{suffix}")
        rf = ("--replication-factor", str(self.cluster.replication_factor))
        config["gateway_args"] = (*rf, *config.get("gateway_args", ()))
        config["sink_args"] = (*rf, *config.get("sink_args", ()))
        return super().stack(brokers=self.cluster.bootstrap, **config)

    def broker_pid(self, stack: Stack) -> int:
        """The pid of the cluster's only node (pausing "the broker" means one node here)."""
        assert len(self.cluster.node_ids) == 1, "pausing the broker of a multi-node cluster is a node fault"
        return self.cluster.pid(self.cluster.node_ids[0])


_S = TypeVar("_S", bound=Scenario)


def run_scenario(request: pytest.FixtureRequest, scenario: _S) -> Iterator[_S]:
    """The body of a scenario fixture: yield it; print its diagnostics if the test failed; close it."""
    print(f"fault schedule seed: {scenario.seed} (replay with FOOTFALL_FAULT_SEED={scenario.seed})")
    try:
        yield scenario
    finally:
        if call_failed(request):
            print(scenario.diagnostics())
        scenario.close()


def call_failed(request: pytest.FixtureRequest) -> bool:
    """True if the requesting test's call phase failed (the report kept by tests/conftest.py)."""
    report = getattr(request.node, "report_call", None)
    return report is not None and bool(report.failed)


def heal(cluster: KafkaCluster, failed: bool) -> None:
    """After a scenario: every node of ``cluster`` running and unpaused again (its logs printed if it failed)."""
    if failed:
        for node_id in cluster.node_ids:
            print(f"--- kafka node {node_id} server.log (tail)\n{cluster.log_tail(node_id, 3000)}")
    for node_id in cluster.node_ids:
        if cluster.is_running(node_id):
            cluster.resume(node_id)
    for node_id in cluster.node_ids:
        if not cluster.is_running(node_id):
            cluster.start_node(node_id)
