"""HAProxy's runtime API over its admin socket: see the gateways, drain one, wait for one to be back.

The rehearsal's ``gateway-lb`` is HAProxy itself; a rolling restart takes each gateway out of
rotation (``state drain``) and waits for its requests to finish before stopping it, then waits
for the health check to put it back. The backend is ``gateways`` (deploy/haproxy.cfg).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Final

from footfall.errors import FootfallError

__all__ = ["Balancer"]

_BACKEND: Final = "gateways"


class Balancer:
    """Talks to one HAProxy through the admin socket at ``socket_path``."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def command(self, command: str) -> str:
        """One HAProxy runtime-API command; returns the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each gateway: server name -> its ``show stat`` fields."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r.get("pxname") == _BACKEND and r["svname"].startswith("gateway-")}

    def drain(self, name: str, timeout: float = 30.0) -> None:
        """Take ``name`` out of rotation (``state drain``), wait until HAProxy has no request on it."""
        self.command(f"set server {_BACKEND}/{name} state drain")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.servers()[name]
            if server["status"] in {"DRAIN", "DRAIN (agent)"} and server["scur"] in {"0", ""}:
                return
            time.sleep(0.1)
        raise FootfallError(f"{name} still had requests in flight after {timeout:g}s of draining")

    def ready(self, name: str) -> None:
        """Put ``name`` back in rotation (its health check still decides when it is UP)."""
        self.command(f"set server {_BACKEND}/{name} state ready")

    def wait_up(self, name: str, timeout: float = 30.0) -> None:
        """Wait until HAProxy's health check has put gateway ``name`` back in rotation."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.servers()[name]["status"] == "UP":
                return
            time.sleep(0.1)
        raise FootfallError(f"HAProxy did not take {name} back within {timeout:g}s")
