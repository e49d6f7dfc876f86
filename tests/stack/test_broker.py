"""The embedded broker launcher: starts on a free port, answers Kafka, leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from footfall.kafka import kafka_answers
from stack.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists"; look at its state.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_answers_kafka_and_stop_leaves_no_process() -> None:
    broker = EmbeddedBroker().start()
    host, port = broker.bootstrap.split(":")
    pid = broker.pid
    assert kafka_answers(host, int(port))
    broker.start()  # idempotent
    assert broker.pid == pid
    broker.stop()
    broker.stop()  # idempotent
    assert _wait_dead(pid)
    assert not kafka_answers(host, int(port))


def test_paused_broker_still_stops() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        os.kill(pid, signal.SIGSTOP)
    assert _wait_dead(pid)


def test_broker_dies_with_a_killed_parent() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from stack.broker import EmbeddedBroker
        b = EmbeddedBroker().start()
        print(b.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    broker_pid = int(parent.stdout.readline())
    assert _alive(broker_pid)
    parent.kill()  # kill -9: no atexit, no finally
    parent.wait()
    assert _wait_dead(broker_pid), "the broker outlived its parent"
