"""Sink faults: killed (SIGKILL) again and again, its disk full, its directory read-only.

The disk faults are real kernel behaviour, not mocks: a 2 MiB tmpfs mounted as the record
directory and filled (ENOSPC), and a read-only bind mount over it (EROFS; root cannot
bypass either, unlike permission bits). They need root; elsewhere they skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from footfall import promtext
from stack.processes import Stack
from tests.faults.harness import (
    Scenario,
    alive,
    bind_read_only,
    bind_read_write,
    children,
    cmdline,
    fill,
    free_bytes,
    group_pids,
    mount_tmpfs,
    mounted,
    require_root,
    subprocess_env,
    unmount_all,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(240)]


def _write_errors(stack: Stack) -> float:
    return promtext.total(stack.metrics("sink"), "footfall_sink_write_errors_total")


def _sink_workers(stack: Stack) -> list[int]:
    """The sink supervisor's worker processes (multiprocessing spawn children, not its resource tracker)."""
    return [pid for pid in children(stack.processes["sink"].pid) if "resource_tracker" not in cmdline(pid)]


def test_sink_killed_repeatedly(faults: Scenario) -> None:
    """SIGKILL the sink three times under load: a worker twice, the whole sink (supervisor too) once; exact landing."""
    # A whole-sink kill leaves its dead consumers in the group until their session times out; a
    # short session timeout keeps the scenario short (production keeps the 10 s default).
    stack = faults.stack(sink_args=("--session-timeout", "5"))
    run = faults.bench(stack, duration=24)
    wait_for(lambda: stack.landed() > 0, 20, "the sink to land records")
    whole_round = faults.rng.randrange(3)
    for round_ in range(3):
        time.sleep(faults.rng.uniform(2.0, 4.0))  # the seeded schedule
        whole = round_ == whole_round
        if whole:
            proc = stack.processes["sink"]
            victims = group_pids(proc.pid)
            stack.signal("sink", signal.SIGKILL)
            faults.log(f"SIGKILL whole sink: supervisor {proc.pid} and workers {victims}")
            proc.wait(10)
            wait_for(lambda victims=victims: not any(alive(p) for p in victims), 10, "the killed sink to be gone")
            stack.start_role("sink")
            faults.log(f"sink restarted (pid {stack.processes['sink'].pid})")
        else:
            workers = _sink_workers(stack)
            assert workers, "the sink has no worker processes"
            victim = faults.rng.choice(workers)
            os.kill(victim, signal.SIGKILL)
            faults.log(f"SIGKILL sink worker pid={victim} (of {workers})")
            wait_for(lambda victim=victim: not alive(victim), 10, "the killed worker to be gone")
            # The supervisor replaces it.
            wait_for(
                lambda workers=workers: len(set(_sink_workers(stack)) - set(workers)) >= 1,
                30,
                "the sink supervisor to start a replacement worker",
            )
            faults.log(f"sink workers now {_sink_workers(stack)}")
    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    assert stack.processes["sink"].poll() is None
    faults.settle_and_verify(stack, run).assert_exact(faults.diagnostics())


@pytest.fixture
def tmpfs_records(faults: Scenario) -> Path:
    """A fresh tmpfs as the record directory (unmounted after the stack stopped)."""
    require_root()
    records = faults.root / "records"
    try:
        mount_tmpfs(records, "2m")
    except PermissionError as exc:
        pytest.skip(f"mount is not permitted here ({exc}); the disk-full scenario needs a real small file system")
    faults.defer(unmount_all, records)  # registered before the stack: runs after it stopped
    faults.log(f"tmpfs size=2m mounted on {records}")
    return records


def test_sink_disk_full_then_freed(faults: Scenario, tmpfs_records: Path) -> None:
    """Fill the record directory's file system (ENOSPC) under load, free it; nothing lost or doubled.

    ``--write-retry-timeout 3``: batches that cannot be written for 3 s are parked on
    ``<topic>.retry`` and landed from there once the disk has room again.
    """
    records = tmpfs_records
    stack = faults.stack(record_directory=records, sink_args=("--write-retry-timeout", "3"))
    # ~10 requests/s of 12 reports (~230 bytes each): ~30 KB/s, well inside 2 MiB once freed.
    run = faults.bench(stack, duration=22, rate=10, clients=8)
    wait_for(lambda: stack.landed() > 0, 20, "the sink to land records")
    time.sleep(faults.rng.uniform(2.0, 4.0))  # the seeded schedule
    hold = faults.rng.uniform(7.0, 10.0)

    filler = fill(records)
    faults.log(f"disk full: filler {filler.stat().st_size} bytes, {free_bytes(records)} bytes free; hold {hold:.1f}s")
    try:
        full_since = time.monotonic()
        wait_for(lambda: _write_errors(stack) > 0, hold + 10, "the sink to hit a write error (ENOSPC)")
        faults.log(f"sink write errors: {_write_errors(stack):.0f}")
        time.sleep(max(0.0, full_since + hold - time.monotonic()))  # the seeded schedule
    finally:
        filler.unlink(missing_ok=True)
    faults.log(f"disk freed: {free_bytes(records)} bytes free")

    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    assert stack.processes["sink"].poll() is None, stack.log_tail("sink")
    result = faults.settle_and_verify(stack, run)
    sink_metrics = stack.metrics("sink")
    faults.log(
        "sink: parked on retry "
        f"{promtext.total(sink_metrics, 'footfall_sink_retry_parked_records_total'):.0f}, landed from retry "
        f"{promtext.total(sink_metrics, 'footfall_sink_retry_landed_records_total'):.0f}"
    )
    result.assert_exact(faults.diagnostics())


def test_sink_directory_read_only_then_writable(faults: Scenario) -> None:
    """Make the record directory read-only under load (EROFS, root included), then writable; exact landing."""
    require_root()
    records = faults.root / "records"
    try:
        mount_tmpfs(records, "256m")
    except PermissionError as exc:
        pytest.skip(f"mount is not permitted here ({exc}); the read-only scenario needs a bind mount")
    faults.defer(unmount_all, records)
    stack = faults.stack(record_directory=records)
    run = faults.bench(stack, duration=22)
    wait_for(lambda: stack.landed() > 0, 20, "the sink to land records")
    time.sleep(faults.rng.uniform(2.0, 4.0))  # the seeded schedule
    hold = faults.rng.uniform(6.0, 9.0)

    bind_read_only(records)
    faults.log(f"record directory read-only (ro bind mount over {records}); hold {hold:.1f}s")
    try:
        ro_since = time.monotonic()
        wait_for(lambda: _write_errors(stack) > 0, hold + 10, "the sink to hit a write error (EROFS)")
        faults.log(f"sink write errors: {_write_errors(stack):.0f}")
        time.sleep(max(0.0, ro_since + hold - time.monotonic()))  # the seeded schedule
    finally:
        bind_read_write(records)
    faults.log("record directory writable again")

    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    assert stack.processes["sink"].poll() is None, stack.log_tail("sink")
    faults.settle_and_verify(stack, run).assert_exact(faults.diagnostics())


def _mfusepy_problem() -> str | None:
    try:
        import mfusepy  # type: ignore[import-untyped]  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: libfuse itself is missing
        return f"the slow-disk scenario needs mfusepy and libfuse (Debian libfuse2): {exc}"
    if not Path("/dev/fuse").exists():
        return "the slow-disk scenario needs /dev/fuse"
    return None


def test_sink_on_a_slow_disk(faults: Scenario) -> None:
    """Writes +20 ms and fsyncs +300 ms each (a FUSE loopback file system) for a while under load; exact landing.

    The gateway must not notice (Kafka absorbs the backlog: no request fails); the sink falls
    behind, then catches up once the disk is fast again.
    """
    require_root()
    problem = _mfusepy_problem()
    if problem:
        pytest.skip(problem)
    backing, records, control = faults.root / "backing", faults.root / "records", faults.root / "slow-now"
    backing.mkdir()
    records.mkdir()
    log = (faults.logs / "slowfs.log").open("ab")
    fs = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.slowfs", str(backing), str(records),
         "--write-delay-ms", "20", "--fsync-delay-ms", "300", "--control", str(control)],
        stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True,
    )  # fmt: skip
    log.close()

    def unmount() -> None:
        unmount_all(records)
        if fs.poll() is None:
            fs.terminate()
            try:
                fs.wait(10)
            except subprocess.TimeoutExpired:
                fs.kill()
                fs.wait()

    faults.defer(unmount)  # registered before the stack: runs after it stopped
    wait_for(lambda: mounted(records), 15, "the FUSE file system to be mounted")
    faults.log(f"FUSE loopback mounted on {records} (backing {backing})")
    stack = faults.stack(record_directory=records)
    run = faults.bench(stack, duration=22)
    wait_for(lambda: stack.landed() > 0, 20, "the sink to land records")
    time.sleep(faults.rng.uniform(2.0, 4.0))  # the seeded schedule
    hold = faults.rng.uniform(8.0, 11.0)
    slow_before = _slow_fsyncs(stack)
    control.touch()
    faults.log(f"disk slow: +20 ms per write, +300 ms per fsync, for {hold:.1f}s")
    try:
        time.sleep(hold)  # the seeded schedule
    finally:
        control.unlink(missing_ok=True)
    faults.log("disk fast again")
    # Snapshots of other workers reach /metrics up to a second late: poll for the evidence.
    wait_for(lambda: _slow_fsyncs(stack) - slow_before >= 3, 10, "fsyncs slower than 0.25 s (the fault happening)")
    faults.log(f"segment fsyncs slower than 0.25 s while the disk was slow: {_slow_fsyncs(stack) - slow_before:.0f}")

    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    assert summary["counts"]["failed"] == 0, "a slow sink disk made gateway requests fail"
    faults.settle_and_verify(stack, run).assert_exact(faults.diagnostics())


def _slow_fsyncs(stack: Stack, threshold: str = "0.25") -> float:
    """Segment fsyncs so far that took longer than ``threshold`` seconds (from the histogram buckets)."""
    total = under = 0.0
    for line in stack.metrics("sink").splitlines():
        if line.startswith("footfall_sink_fsync_seconds_bucket{"):
            if 'le="+Inf"' in line:
                total += float(line.rsplit(" ", 1)[1])
            elif f'le="{threshold}"' in line:
                under += float(line.rsplit(" ", 1)[1])
    return total - under


def _footfall_up(records: Path, logs: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    """``footfall up --duration`` on free ports: it runs the bench, then ``bench verify`` (exit 4 on loss)."""
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", "up", "--record-directory", str(records), "--duration", str(seconds),
         "--gateway-port", "0", "--sink-port", "0", "--dashboard-port", "0", "--concurrent-clients", "8",
         "--log-directory", str(logs)],
        capture_output=True, text=True, timeout=180, env=subprocess_env(), check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_footfall_up_twice_on_one_record_directory(faults: Scenario) -> None:
    """The memory-only broker starts again at offset 0 under checkpoints of the first run: the second
    run lands in a new generation, nothing skipped, nothing overwritten; both verifies clean."""
    records = faults.root / "records"
    first = _footfall_up(records, faults.logs / "up-1", 6)
    faults.log(f"first footfall up: exit {first.returncode}")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "lost=0 duplicated=0 unexpected=0" in first.stdout, first.stdout[-3000:]
    earlier = {p: p.read_bytes() for p in records.glob("*/date=*/*.jsonl")}
    assert earlier

    second = _footfall_up(records, faults.logs / "up-2", 6)
    faults.log(f"second footfall up: exit {second.returncode}")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "lost=0 duplicated=0 unexpected=0" in second.stdout, second.stdout[-3000:]
    assert {p: p.read_bytes() for p in earlier} == earlier  # the first run's files as they were
    assert any("+g1+" in p.name for p in records.glob("*/date=*/*.jsonl"))  # the second run's own files
    sink_log = (faults.logs / "up-2" / "sink.log").read_text()
    assert "checkpoint ahead of the log" in sink_log


def _broker_connections(pid: int, broker_port: int) -> list[int]:
    """Local ports of ``pid``'s established TCP connections to ``broker_port`` (from /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if inode in inodes and state == "01" and int(remote.rsplit(":", 1)[1], 16) == broker_port:
            ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.slow
def test_sink_worker_connections_reset_repeatedly(faults: Scenario) -> None:
    """The sink workers' broker connections are destroyed (``ss -K``) every 0.2-0.5 s under load. aiokafka's
    fetch task can die of it while the consumer keeps heartbeating; the worker must notice, be restarted
    and land everything: exact, and the sink ready at the end."""
    require_root()  # ss -K needs CAP_NET_ADMIN
    stack = faults.stack(sink_args=("--stall-timeout", "5"))
    run = faults.bench(stack, duration=16, rate=200)
    wait_for(lambda: stack.landed() > 0, 20, "the sink to land records")
    broker_port = int(stack.bootstrap.rsplit(":", 1)[1])
    # 30 resets 0.2-0.5 s apart: the old sink lost its fetcher (and ~12k reports) in each of 2 runs.
    for _ in range(30):
        time.sleep(faults.rng.uniform(0.2, 0.5))  # the seeded schedule
        for worker in _sink_workers(stack):
            ports = _broker_connections(worker, broker_port)
            for port in ports:
                subprocess.run(
                    ["ss", "-K", "src", "127.0.0.1", "sport", "=", f":{port}"], capture_output=True, check=False
                )
            faults.log(f"reset the {len(ports)} broker connections of sink worker {worker}")
    summary = run.wait()
    faults.log(f"bench: {summary['counts']} errors {summary['errors']}")
    faults.settle_and_verify(stack, run).assert_exact(faults.diagnostics())
    assert stack.processes["sink"].poll() is None
    stack.wait_ready("sink", 30)
    faults.log(f"sink worker stalls seen: {promtext.total(stack.metrics('sink'), 'footfall_sink_worker_stalls_total')}")
