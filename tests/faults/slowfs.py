"""A slow disk for the fault suite: a FUSE loopback file system that delays every write and fsync.

``python -m tests.faults.slowfs BACKING MOUNTPOINT --write-delay-ms 20 --fsync-delay-ms 200``
mounts ``BACKING`` on ``MOUNTPOINT`` (foreground; unmount with ``fusermount -u`` or SIGTERM).
Every ``write`` waits ``--write-delay-ms`` and every ``fsync``/``fsyncdir`` waits
``--fsync-delay-ms`` before doing the real operation on the backing directory, so the sink
sees what a saturated or failing disk looks like from user space: the same system calls,
just slow. Requests are served by several threads (libfuse's multithreaded loop), so delays
overlap as they would on a real device queue. With ``--control FILE`` the delays apply only
while FILE exists (the fault is switched on and off by creating and removing it).

Needs ``/dev/fuse``, libfuse (Debian ``libfuse2``) and ``mfusepy`` (PyPI); the scenario
skips with the reason when one is missing.
"""

from __future__ import annotations

import argparse
import errno
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from mfusepy import FUSE, FuseOSError, Operations  # type: ignore[import-untyped]


class SlowLoopback(Operations):  # type: ignore[misc]
    """Pass every operation to ``root``; sleep before writes and fsyncs."""

    use_ns = True

    def __init__(self, root: str, write_delay: float, fsync_delay: float, control: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.write_delay = write_delay
        self.fsync_delay = fsync_delay
        self.control = control

    def _delay(self, seconds: float) -> None:
        # With --control, the disk is slow only while that file exists (a fault switched on and off).
        if self.control is None or os.path.exists(self.control):
            time.sleep(seconds)

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            raise FuseOSError(exc.errno or errno.EIO) from exc

    # -- metadata
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = self._call(os.lstat, self._path(path))
        keys = ("st_atime_ns", "st_ctime_ns", "st_mtime_ns", "st_gid", "st_mode", "st_nlink", "st_size", "st_uid")
        out = {key.replace("_ns", ""): getattr(st, key) for key in keys}
        out["st_blocks"] = st.st_blocks
        return out

    def readdir(self, path: str, fh: int) -> Iterator[str]:
        yield from [".", "..", *self._call(os.listdir, self._path(path))]

    def statfs(self, path: str) -> dict[str, Any]:
        sv = self._call(os.statvfs, self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
                "f_frsize", "f_namemax")  # fmt: skip
        return {key: getattr(sv, key) for key in keys}

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._path(path), amode):
            raise FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        self._call(os.chmod, self._path(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self._call(os.chown, self._path(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            self._call(os.utime, self._path(path))
        else:
            self._call(lambda p: os.utime(p, ns=times), self._path(path))
        return 0

    # -- namespace
    def mkdir(self, path: str, mode: int) -> int:
        self._call(os.mkdir, self._path(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        self._call(os.rmdir, self._path(path))
        return 0

    def unlink(self, path: str) -> int:
        self._call(os.unlink, self._path(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        self._call(os.rename, self._path(old), self._path(new))
        return 0

    # -- files
    def open(self, path: str, flags: int) -> int:
        return int(self._call(os.open, self._path(path), flags))

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return int(self._call(os.open, self._path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._call(os.pread, fh, size, offset))

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._delay(self.write_delay)
        return int(self._call(os.pwrite, fh, data, offset))

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if fh is not None:
            self._call(os.ftruncate, fh, length)
        else:
            self._call(os.truncate, self._path(path), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self._delay(self.fsync_delay)
        self._call(os.fdatasync if datasync else os.fsync, fh)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self._delay(self.fsync_delay)
        return 0

    def release(self, path: str, fh: int) -> int:
        self._call(os.close, fh)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.slowfs", description=__doc__.splitlines()[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--write-delay-ms", type=float, default=20.0)
    parser.add_argument("--fsync-delay-ms", type=float, default=200.0)
    parser.add_argument("--control", help="delay only while this file exists (default: always)")
    args = parser.parse_args(argv)
    FUSE(
        SlowLoopback(args.backing, args.write_delay_ms / 1000, args.fsync_delay_ms / 1000, args.control),
        args.mountpoint,
        foreground=True,
        nothreads=False,
        allow_other=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
