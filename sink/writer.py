"""Segment writer: one per assigned topic partition; append-only, buffered, crash-safe.

Files follow design.md §4: ``<DIR>/<topic>/date=YYYY-MM-DD/<topic>+<partition>+<startOffset:020d>.jsonl``,
one Kafka value per line, the date being the UTC date of the record timestamp. Records
of a ``<topic>.retry`` partition land in ``<DIR>/<topic>/...`` too, in segments named
after the retry partition (``<topic>.retry+<p>+<offset>.jsonl``), so readers that glob
``<DIR>/<topic>/date=*/*.jsonl`` see every record once.

Delivery: :meth:`PartitionWriter.append` only buffers (one ``bytearray`` per partition,
written with one ``pwrite`` when full: no per-record syscalls). Nothing counts as landed
until :meth:`PartitionWriter.commit` has written, fsynced and checkpointed it. After a
crash, :meth:`PartitionWriter.recover` truncates the current segment to the checkpointed
length and deletes segments started after the checkpoint, so the files hold exactly
the records up to the checkpoint offset.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Final, Literal

from footfall.layout import SEGMENT_SUFFIX, check_topic, date_dir, parse_segment_name, segment_name
from sink.checkpoint import Checkpoint, CheckpointStore, fsync_dir, ranges_add
from sink.errors import RecoveryError, SegmentWriteError

__all__ = ["MS_PER_DAY", "PartitionWriter", "day_of"]

log = logging.getLogger(__name__)

MS_PER_DAY: Final = 86_400_000
_EPOCH: Final = dt.date(1970, 1, 1)


def day_of(timestamp_ms: int) -> int:
    """Days since 1970-01-01 (UTC) of an epoch-milliseconds timestamp."""
    return timestamp_ms // MS_PER_DAY


class PartitionWriter:
    """Lands the records of one topic partition in segment files.

    Not thread-safe; one asyncio task (a worker's group loop) drives it. Raises
    :class:`SegmentWriteError` for any failed write, fsync, truncate or checkpoint; the
    caller then calls :meth:`reset_to_checkpoint` and consumes again from
    ``checkpoint.offset + 1`` (or parks the records on the retry topic).
    """

    def __init__(
        self,
        record_directory: Path,
        topic: str,
        partition: int,
        store: CheckpointStore,
        *,
        out_topic: str | None = None,
        buffer_bytes: int = 1 << 20,
        segment_bytes: int = 128 << 20,
        segment_age: float = 3600.0,
        fsync: Literal["always", "commit", "never"] = "commit",
    ) -> None:
        self.record_directory = record_directory
        self.topic = check_topic(topic)
        self.partition = int(partition)
        self.out_topic = check_topic(out_topic or topic)
        self.store = store
        self.buffer_bytes = buffer_bytes
        self.segment_bytes = segment_bytes
        self.segment_age = segment_age
        self.fsync_policy = fsync
        #: The last durable checkpoint (what survives a crash).
        self.checkpoint = Checkpoint()
        #: Last offset appended or settled in memory (>= checkpoint.offset).
        self.last_offset = -1
        self.parked: list[tuple[int, int]] = []
        self.landed_from: dict[int, list[tuple[int, int]]] = {}
        self._buf = bytearray()
        self._fd: int | None = None
        self._seg_rel: str | None = None
        self._seg_day = -1
        self._seg_opened = 0.0
        self._written = 0  # bytes of the open segment already written to the file
        self._unsynced = False
        self._needs_cleanup = False
        #: Records appended since the last checkpoint (counted as written once committed).
        self.pending_records = 0
        self.pending_bytes = 0
        #: Gateway receive times (ms) of sampled records since the last checkpoint.
        self.pending_received_ms: list[int] = []
        #: Durations (s) of fsyncs of segment files, drained by the worker for its metrics.
        self.fsync_seconds: list[float] = []

    @property
    def name(self) -> str:
        return f"{self.topic}[{self.partition}]"

    # ------------------------------------------------------------------ recovery

    def _segments(self) -> list[tuple[int, Path]]:
        """(start offset, path) of every segment of this partition, any date."""
        topic_dir = self.record_directory / self.out_topic
        if not topic_dir.is_dir():
            return []
        found = []
        for day_dir in topic_dir.glob("date=*"):
            for path in day_dir.glob(f"{self.topic}+{self.partition}+*{SEGMENT_SUFFIX}"):
                parsed = parse_segment_name(path.name)
                if parsed is not None and parsed.topic == self.topic and parsed.partition == self.partition:
                    found.append((parsed.start_offset, path))
        return sorted(found)

    def recover(self) -> Checkpoint:
        """Make the files agree with the checkpoint; call on assignment, before consuming.

        Steps:
            1. load the checkpoint; if there is none, there must be no segment either
               (else the state was lost: :class:`RecoveryError`, nothing is deleted),
               and an empty checkpoint is written first, so that any segment found
               later without a checkpoint entry is known to be uncommitted;
            2. truncate the checkpoint's segment to the checkpointed length;
            3. delete every segment that starts after the checkpoint offset
               (it only holds records that were never committed);
            4. fsync the directories touched.

        Returns:
            The checkpoint; consume from ``offset + 1``.

        Raises:
            RecoveryError: the files have fewer bytes than the checkpoint says, or
                segments exist without any checkpoint.
            SegmentWriteError: the disk refused a truncate/delete/checkpoint write.
        """
        self._close_fd()
        loaded = self.store.load(self.topic, self.partition)
        if loaded is None:
            segments = self._segments()
            if segments:
                raise RecoveryError(
                    f"{self.name}: {len(segments)} segment(s) such as {segments[0][1]} but no checkpoint "
                    f"{self.store.path(self.topic, self.partition)}; the sink's state was lost. Move the "
                    "segments away (or restore _footfall/) before starting the sink"
                )
            loaded = Checkpoint()
            try:
                self.store.save(self.topic, self.partition, loaded)
            except OSError as exc:
                raise SegmentWriteError(f"{self.name}: cannot write first checkpoint: {exc}", exc.errno) from exc
        self._adopt(loaded)
        self._needs_cleanup = True
        self._cleanup()
        log.info(
            "partition recovered",
            extra={"tp": self.name, "offset": loaded.offset, "segment": loaded.segment, "length": loaded.length},
        )
        return loaded

    def _adopt(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.last_offset = checkpoint.offset
        self.parked = list(checkpoint.parked)
        self.landed_from = {k: list(v) for k, v in checkpoint.landed_from.items()}
        self._buf = bytearray()
        self._seg_rel = None
        self._seg_day = -1
        self._written = 0
        self._unsynced = False
        self.pending_records = 0
        self.pending_bytes = 0
        self.pending_received_ms = []

    def _cleanup(self) -> None:
        """Truncate/delete whatever lies past the checkpoint (steps 2-4 of :meth:`recover`)."""
        if not self._needs_cleanup:
            return
        ckpt = self.checkpoint
        touched: set[Path] = set()
        try:
            if ckpt.segment is not None:
                path = self.record_directory / ckpt.segment
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    size = -1
                if size < ckpt.length:
                    raise RecoveryError(
                        f"{self.name}: segment {path} has {max(size, 0)} bytes but the checkpoint says {ckpt.length}; "
                        "data was lost outside the sink (fsync=never and a machine crash?)"
                    )
                if size > ckpt.length:
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.ftruncate(fd, ckpt.length)
                        if self.fsync_policy != "never":
                            os.fsync(fd)
                    finally:
                        os.close(fd)
                    log.warning(
                        "truncated uncommitted tail",
                        extra={"tp": self.name, "segment": str(path), "from": size, "to": ckpt.length},
                    )
            for start, path in self._segments():
                if start > ckpt.offset and (ckpt.segment is None or path != self.record_directory / ckpt.segment):
                    path.unlink()
                    touched.add(path.parent)
                    log.warning("deleted uncommitted segment", extra={"tp": self.name, "segment": str(path)})
            if self.fsync_policy != "never":
                for directory in touched:
                    fsync_dir(directory)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: cannot clean up past checkpoint: {exc}", exc.errno) from exc
        self._needs_cleanup = False

    def reset_to_checkpoint(self) -> None:
        """Forget everything since the last checkpoint (after a failed write).

        The caller must consume again from ``checkpoint.offset + 1``. The on-disk
        clean-up is attempted now and, if the disk still refuses, before the next write.
        """
        self._close_fd()
        self._adopt(self.checkpoint)
        self._needs_cleanup = True
        with contextlib.suppress(SegmentWriteError):
            self._cleanup()

    # ------------------------------------------------------------------ writing

    def append(self, data: bytes | bytearray, count: int, last_offset: int, first_offset: int, day: int) -> None:
        """Buffer ``count`` records (``data`` = their values, each followed by ``\\n``).

        Rotates first if the UTC day differs from the open segment's, or the segment
        is too big or too old. Writes the buffer out when it exceeds ``buffer_bytes``.
        Nothing is durable until :meth:`commit`.

        Raises:
            SegmentWriteError: the disk refused; call :meth:`reset_to_checkpoint`.
        """
        if self._fd is None or day != self._seg_day or self._must_rotate(len(data)):
            self._rotate(first_offset, day)
        self._buf += data
        self.last_offset = max(self.last_offset, last_offset)
        self.pending_records += count
        self.pending_bytes += len(data)
        if len(self._buf) >= self.buffer_bytes:
            self._write_buffer()

    def settle(self, offset: int) -> None:
        """Mark ``offset`` as handled without data here (sent to the DLQ, or a skipped duplicate)."""
        self.last_offset = max(self.last_offset, offset)

    def mark_parked(self, first: int, last: int) -> None:
        """Record that ``first..last`` were acknowledged on the retry topic instead of landed here."""
        self.parked = ranges_add(self.parked, first, last)
        self.last_offset = max(self.last_offset, last)

    def mark_landed_from(self, source_partition: int, source_offset: int) -> None:
        """(Retry partitions) record that a parked source offset is being landed here."""
        ranges = self.landed_from.get(source_partition, [])
        self.landed_from[source_partition] = ranges_add(ranges, source_offset, source_offset)

    def _must_rotate(self, incoming: int) -> bool:
        size = self._written + len(self._buf)
        if size and size + incoming > self.segment_bytes:
            return True
        return time.monotonic() - self._seg_opened >= self.segment_age

    def _rotate(self, first_offset: int, day: int) -> None:
        self._cleanup()
        if self._fd is not None:
            # The old segment is complete: write and fsync it before the new one starts,
            # so a checkpoint pointing at the new one never covers unsynced bytes.
            self._write_buffer()
            self._sync()
            self._close_fd()
        directory = date_dir(self.record_directory, self.out_topic, _EPOCH + dt.timedelta(days=day))
        path = directory / segment_name(self.topic, self.partition, first_offset)
        try:
            created = self._mkdirs(directory)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            if self.fsync_policy != "never":
                # The new file's entry, and the entries of any directory just created.
                for d in sorted({directory, *(c.parent for c in created)}, key=lambda p: len(p.parts)):
                    fsync_dir(d)
        except FileExistsError as exc:
            raise RecoveryError(
                f"{self.name}: segment {path} already exists; another sink process is writing this partition"
            ) from exc
        except OSError as exc:
            self._close_fd()
            raise SegmentWriteError(f"{self.name}: cannot create {path}: {exc.strerror}", exc.errno) from exc
        self._seg_rel = str(path.relative_to(self.record_directory))
        self._seg_day = day
        self._seg_opened = time.monotonic()
        self._written = 0
        self._unsynced = False

    def _mkdirs(self, directory: Path) -> list[Path]:
        """Create missing directories; returns the ones created (their parents need an fsync)."""
        created: list[Path] = []
        probe = directory
        while not probe.is_dir():
            created.append(probe)
            probe = probe.parent
        for d in reversed(created):
            d.mkdir(exist_ok=True)
        return created

    def _write_buffer(self) -> None:
        if not self._buf:
            return
        assert self._fd is not None
        view = memoryview(self._buf)
        pos = self._written
        try:
            while view:
                # pwrite at our own position (not O_APPEND): after a failed, partial write
                # the next attempt overwrites the partial bytes instead of following them.
                n = os.pwrite(self._fd, view, pos)
                pos += n
                view = view[n:]
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: write to {self._seg_rel} failed: {exc.strerror}", exc.errno) from exc
        finally:
            view.release()
        self._written = pos
        self._buf.clear()
        self._unsynced = True
        if self.fsync_policy == "always":
            self._sync()

    def _sync(self) -> None:
        if self._fd is None or not self._unsynced or self.fsync_policy == "never":
            self._unsynced = False
            return
        started = time.perf_counter()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: fsync of {self._seg_rel} failed: {exc.strerror}", exc.errno) from exc
        self._unsynced = False
        self.fsync_seconds.append(time.perf_counter() - started)

    @property
    def dirty(self) -> bool:
        """True if anything happened since the last checkpoint."""
        c = self.checkpoint
        return self.last_offset != c.offset or self.parked != c.parked or self.landed_from != c.landed_from

    def commit(self, *, sync_dir: bool = True) -> bool:
        """Make everything appended so far durable and checkpoint it.

        Steps (order matters; see the worker's commit for the whole sequence):
            1. clean up any uncommitted tail left by an earlier failure;
            2. write the buffer to the segment file;
            3. fsync the segment (unless ``--fsync never``);
            4. atomically replace the checkpoint (offset, segment, length); with
               ``sync_dir=False`` the caller fsyncs the checkpoint directory afterwards
               (:attr:`checkpoint_dir`), once for all partitions committed together.

        Returns:
            True if a new checkpoint was written (the caller then commits
            ``checkpoint.offset + 1`` to Kafka), False if nothing changed.

        Raises:
            SegmentWriteError: the disk refused; the old checkpoint still holds.
        """
        if not self.dirty:
            return False
        self._cleanup()
        self._write_buffer()
        self._sync()
        new = Checkpoint(
            offset=self.last_offset,
            segment=self._seg_rel if self._seg_rel is not None else self.checkpoint.segment,
            length=self._written if self._seg_rel is not None else self.checkpoint.length,
            parked=list(self.parked),
            landed_from={k: list(v) for k, v in self.landed_from.items()},
        )
        try:
            self.store.save(self.topic, self.partition, new, sync_dir=sync_dir)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: checkpoint write failed: {exc.strerror}", exc.errno) from exc
        self.checkpoint = new
        return True

    @property
    def checkpoint_dir(self) -> Path:
        return self.store.path(self.topic, self.partition).parent

    def take_committed_stats(self) -> tuple[int, int, list[int]]:
        """(records, bytes, sampled receive times) landed by the last commit; resets them."""
        out = (self.pending_records, self.pending_bytes, self.pending_received_ms)
        self.pending_records = 0
        self.pending_bytes = 0
        self.pending_received_ms = []
        return out

    def close(self) -> None:
        """Close the file without committing (call :meth:`commit` first to keep the data)."""
        self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
