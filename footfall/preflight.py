"""Checks a process makes before it starts serving, so an operator's mistake is one line.

A port someone else holds, a read-only, unwritable or full directory: each becomes a
:class:`~footfall.errors.StartupError` naming the flag, the address or path, and what to do
— before any broker wait or worker start, where the same fault would otherwise surface as
a library traceback. :func:`listeners` tells which processes hold a TCP port (Linux
``/proc``), so a launcher can check that the server answering is the one it started.
:func:`claim` keeps a second process off a directory one process owns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Final

from footfall.errors import StartupError

__all__ = ["check_directory", "check_listen", "claim", "describe_pid", "listen_socket", "listeners"]

_TCP_LISTEN: Final = "0A"  # the state column of /proc/net/tcp for LISTEN
_COMMAND_CHARS: Final = 80  # of a holder's command line, in one-line messages

_DIRECTORY_CAUSES: Final = {
    errno.EROFS: ("it is on a read-only file system", "pick a writable directory"),
    errno.EACCES: ("permission denied", "fix its permissions or pick another directory"),
    errno.EPERM: ("permission denied", "fix its permissions or pick another directory"),
    errno.ENOSPC: ("no space left on the device", "free some space or pick another directory"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or pick another directory"),
    errno.ENOTDIR: ("a part of the path is a file, not a directory", "pick another path"),
    errno.EEXIST: ("it exists and is not a directory", "pick another path"),
}


def check_listen(host: str, port: int, flag: str) -> None:
    """Raise :class:`StartupError` if ``host:port`` cannot be listened on now.

    The probe binds as the servers do (``SO_REUSEADDR``, which on Linux never lets two
    sockets listen on one port) and closes at once; port 0 always passes.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            raise StartupError(_listen_message(host, port, flag, exc)) from exc
        except OverflowError as exc:  # pragma: no cover - ports are range-checked in the settings
            raise StartupError(f"{flag}: {port} is not a TCP port") from exc


def listen_socket(host: str, port: int, flag: str, backlog: int) -> socket.socket:
    """The server's listening socket, bound here so that ``port`` 0 becomes a known free port.

    Inheritable: Sanic's spawned workers accept on it. (Given a port of 0, Sanic would listen
    on its default, 8000.)

    Raises:
        StartupError: the address cannot be listened on (in use since :func:`check_listen`, ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise StartupError(_listen_message(host, port, flag, exc)) from exc
    sock.set_inheritable(True)
    return sock


def _listen_message(host: str, port: int, flag: str, exc: OSError) -> str:
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        holders = ", ".join(describe_pid(pid) for pid in sorted(listeners(port)))
        held = f" (held by {holders})" if holders else ""
        return f"{flag}: {where}: address already in use{held}; pick another port or stop that process"
    if exc.errno == errno.EACCES:
        return f"{flag}: {where}: permission denied; ports below 1024 need privileges, pick a higher one"
    if exc.errno in {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}:
        return f"{where}: {host} is not an address of this machine; check --host"
    return f"{flag}: {where}: {exc.strerror or exc}"


def check_directory(path: Path, flag: str, advice: str = "") -> None:
    """Create ``path`` if missing and prove it takes a write; else raise :class:`StartupError`.

    The probe writes one byte (an empty file fits even on a full file system) and removes it.
    ``advice`` replaces the generic "pick another directory" where the caller knows better.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".footfall-probe-{os.getpid()}"
        try:
            with probe.open("wb") as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as exc:
        cause, generic = _DIRECTORY_CAUSES.get(exc.errno or 0, (exc.strerror or str(exc), "pick another directory"))
        raise StartupError(f"{flag}: cannot write to {str(path)!r}: {cause}; {advice or generic}") from exc


def listeners(port: int) -> set[int]:
    """Pids of the processes that hold a TCP socket listening on ``port`` (any address).

    Reads ``/proc/net/tcp{,6}`` for the listening sockets' inodes, then every readable
    ``/proc/<pid>/fd``; processes of other users that this one cannot inspect are not
    listed. Empty where ``/proc`` is missing.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return set()
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    with contextlib.suppress(OSError):
                        if str(Path(fd.path).readlink()) in wanted:
                            pids.add(int(entry.name))
                            break
    return pids


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:  # noqa: PTH123 - a proc table, read line by line
            next(f, None)  # header
            for line in f:
                cols = line.split()
                if len(cols) > 9 and cols[3] == _TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def describe_pid(pid: int) -> str:
    """``pid 42: python -m gateway --port 8080`` (as much of the command line as is readable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if words:
        words[0] = Path(words[0]).name
    command = " ".join(" ".join(words).split())  # one line, whatever the arguments hold
    if len(command) > _COMMAND_CHARS:  # cut between words: half a flag reads like another flag
        cut = command.rfind(" ", 0, _COMMAND_CHARS)
        command = command[: cut if cut > 0 else _COMMAND_CHARS] + " …"
    return f"pid {pid}: {command}" if command else f"pid {pid}"


def claim(lock: Path, busy: str) -> int:
    """Take ``lock`` (created, this pid written into it) for as long as the returned descriptor is open.

    The kernel drops the lock when the process ends, however it ends: no stale lock after kill -9.

    Raises:
        StartupError: another process holds it; the message is ``busy`` with ``{who}`` replaced by
            that process (as :func:`describe_pid` names it).
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = describe_pid(int(holder)) if holder.isdigit() else "another process"
        raise StartupError(busy.replace("{who}", who)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
