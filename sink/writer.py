"""Segment writer: one per assigned topic partition; append-only, buffered, crash-safe.

Files follow :mod:`footfall.layout`: ``<DIR>/<topic>/date=YYYY-MM-DD/<topic>+<partition>+<startOffset:020d>.jsonl``
(``+g<N>`` before the offset from the partition's second log generation on), one Kafka
value per line, the date being the UTC date of the record timestamp. Records
of a ``<topic>.retry`` partition land in ``<DIR>/<topic>/...`` too, in segments named
after the retry partition (``<topic>.retry+<p>+<offset>.jsonl``), so readers that glob
``<DIR>/<topic>/date=*/*.jsonl`` see every record once.

Delivery: :meth:`PartitionWriter.append` only buffers (one ``bytearray`` per partition,
written with one ``pwrite`` when full: no per-record syscalls). Nothing counts as landed
until :meth:`PartitionWriter.commit` has written, fsynced and checkpointed it. After a
crash, :meth:`PartitionWriter.recover` truncates the current segment to the checkpointed
length and deletes segments started after the checkpoint, so the files hold exactly
the records up to the checkpoint offset. It first checks the checkpoint against the
segment file (length within the file, on a line end, the last line's CRC, the line count
against the offsets): a checkpoint that does not fit raises
:class:`~sink.errors.CheckpointError` and nothing is touched.

State drift (:meth:`PartitionWriter.align_to_log`): once the partition's log bounds are
known, a checkpoint ahead of the log's end (the log started over) moves the partition to
a new generation, whose files never share a name with the earlier ones; a log start past
the checkpoint (retention removed records before they landed) is reported as loss.

An open segment deleted or replaced under the sink (another inode at its path, no link
left, or another size than written) is caught before anything is checkpointed into it
(:class:`~sink.errors.SegmentLostError`): the partition starts a new segment from its
checkpoint and consumes the unconfirmed records again.

Why this module is longer than ~400 lines: recovery and writing both change the state of
one open segment (descriptor, bytes written, line count, last line's CRC, inode) and the
checkpoint that describes it; split in two, each half would reach into the other's private
state. What is not about that state lives elsewhere: the comparison with the log is
:mod:`sink.drift`, the order of a commit across partitions :mod:`sink.commit`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import stat
import time
from pathlib import Path
from typing import Final, Literal

from footfall.layout import check_topic, date_dir, partition_name, segment_files, segment_name
from sink.checkpoint import Checkpoint, CheckpointStore, fsync_dir, line_crc, ranges_add
from sink.drift import LogChange, align
from sink.errors import CheckpointError, RecoveryError, SegmentLostError, SegmentWriteError

__all__ = ["PartitionWriter"]

log = logging.getLogger(__name__)

_EPOCH: Final = dt.date(1970, 1, 1)
#: How far back from the checkpointed length the last line is looked for at recovery (a report
#: is < 1 KiB; a longer last line is not CRC-checked, only its line end).
_LAST_LINE_WINDOW: Final = 64 << 10


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
        self._seg_lines = 0  # lines of the open segment, written or buffered
        self._last_crc: int | None = None  # CRC of its last line
        self._last_line_offset: int | None = None  # offset of the record that line is the value of
        self._seg_ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open segment
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
        return partition_name(self.topic, self.partition)

    # ------------------------------------------------------------------ recovery

    def _segments(self) -> list[tuple[int, int, Path]]:
        """(generation, start offset, path) of every segment of this partition, any date, in log order."""
        return sorted(
            (name.generation, name.start_offset, path)
            for path, name in segment_files(self.record_directory, self.topic, self.partition)
        )

    def recover(self) -> Checkpoint:
        """Make the files agree with the checkpoint; call on assignment, before consuming.

        Steps:
            1. load the checkpoint (validated: :meth:`CheckpointStore.load`); if there is
               none, there must be no segment either (else the state was lost), and an
               empty checkpoint is written first, so that any segment found later without
               a checkpoint entry is known to be uncommitted;
            2. check it against the files: its segment holds at least ``length`` bytes,
               ``length`` is a line end, the line before it has the checkpointed CRC, and no
               segment of a later generation exists;
            3. truncate the checkpoint's segment to the checkpointed length;
            4. delete every segment of the checkpoint's generation that starts after the
               checkpoint offset (it only holds records that were never committed);
               segments of earlier generations are never touched;
            5. fsync the directories touched.

        Returns:
            The checkpoint; consume from ``offset + 1`` (after :meth:`align_to_log`).

        Raises:
            CheckpointError: the checkpoint is invalid or does not fit the files (nothing
                was changed on disk); the partition must not be consumed.
            SegmentWriteError: the disk refused a read/truncate/delete/checkpoint write.
        """
        self._close_fd()
        path = self.store.path(self.topic, self.partition)
        try:
            loaded = self.store.load(self.topic, self.partition)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: cannot read checkpoint {path}: {exc.strerror}", exc.errno) from exc
        if loaded is None:
            segments = self._segments()
            if segments:
                raise CheckpointError(
                    path,
                    self.name,
                    f"does not exist (no checkpoint) but {len(segments)} segment(s) such as {segments[0][2]} do: "
                    "the sink's state was lost; restore _footfall/ or move the segments away",
                )
            loaded = Checkpoint()
            try:
                self.store.save(self.topic, self.partition, loaded)
            except OSError as exc:
                raise SegmentWriteError(f"{self.name}: cannot write first checkpoint: {exc}", exc.errno) from exc
        try:
            self._validate(loaded)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: cannot read {loaded.segment}: {exc.strerror}", exc.errno) from exc
        self._adopt(loaded)
        self._needs_cleanup = True
        self._cleanup()
        log.info(
            "partition recovered",
            extra={"tp": self.name, "offset": loaded.offset, "segment": loaded.segment, "length": loaded.length},
        )
        return loaded

    def _validate(self, ckpt: Checkpoint) -> None:
        """Step 2 of :meth:`recover`: raise :class:`CheckpointError` if ``ckpt`` does not fit the files."""
        path = self.store.path(self.topic, self.partition)

        def bad(reason: str) -> CheckpointError:
            return CheckpointError(path, self.name, reason)

        newer = [p for gen, _, p in self._segments() if gen > ckpt.generation]
        if newer:
            raise bad(
                f"is of generation {ckpt.generation} but segment {newer[0]} is of a later one "
                "(an older checkpoint restored?)"
            )
        if ckpt.segment is None:
            return
        seg = self.record_directory / ckpt.segment
        if seg.parent.parent.name != self.out_topic:
            raise bad(f"names segment {ckpt.segment!r} outside the directory of topic {self.out_topic}")
        try:
            st = seg.stat()
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size < ckpt.length:
            size = (
                "is missing"
                if st is None
                else "is no file"
                if not stat.S_ISREG(st.st_mode)
                else f"has {st.st_size} bytes"
            )
            raise bad(
                f"says {ckpt.length} bytes of segment {seg}, which {size}: data was lost outside the sink "
                "(deleted or truncated; or fsync=never and a machine crash)"
            )
        if ckpt.length == 0:
            return
        start = max(0, ckpt.length - _LAST_LINE_WINDOW)
        with seg.open("rb") as f:
            f.seek(start)
            window = f.read(ckpt.length - start)
        if window[-1:] != b"\n":
            raise bad(f"length {ckpt.length} is not at a line end of {seg}")
        if ckpt.last_line_crc is None:
            return
        cut = window.rfind(b"\n", 0, len(window) - 1)
        if cut < 0 and start > 0:
            return  # a last line longer than the window: its line end was checked
        if line_crc(window[cut + 1 : -1]) != ckpt.last_line_crc:
            raise bad(f"length {ckpt.length} does not end at the last line landed in {seg} (its CRC differs)")

    def align_to_log(self, log_start: int, log_end: int, *, started_over: bool = False) -> LogChange | None:
        """Check the checkpoint against the partition's log; call after :meth:`recover`.

        ``log_start`` is the log's first offset, ``log_end`` the next offset to be written;
        ``started_over``: the caller found another record at :attr:`Checkpoint.last_line_offset`
        than the one landed there (:meth:`matches_log`).

        Steps:
            1. :func:`sink.drift.align` decides: the log started over (a new generation,
               an empty checkpoint) or starts past the checkpoint (retention loss, settled);
            2. if anything changed, the new checkpoint is written at once (durable before a
               single record of the new log lands, and reported once, not at every restart).

        Returns:
            What changed, or None when the checkpoint fits the log.

        Raises:
            SegmentWriteError: the disk refused the checkpoint (nothing changed).
        """
        aligned = align(self.checkpoint, log_start, log_end, started_over=started_over)
        if aligned is None:
            return None
        new, change = aligned
        try:
            self.store.save(self.topic, self.partition, new)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: checkpoint write failed: {exc.strerror}", exc.errno) from exc
        self._adopt(new)
        return change

    def matches_log(self, value: bytes | None) -> bool:
        """Whether ``value``, the log's record at :attr:`Checkpoint.last_line_offset` now, is
        the one whose value ended the segment when the checkpoint was written."""
        tail = (value or b"").rsplit(b"\n", 1)[-1]
        return line_crc(tail) == self.checkpoint.last_line_crc

    def _adopt(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.last_offset = checkpoint.offset
        self.parked = list(checkpoint.parked)
        self.landed_from = {k: list(v) for k, v in checkpoint.landed_from.items()}
        self._buf = bytearray()
        self._seg_rel = None
        self._seg_day = -1
        self._written = 0
        self._seg_lines = checkpoint.lines or 0
        self._last_crc = checkpoint.last_line_crc
        self._last_line_offset = checkpoint.last_line_offset
        self._seg_ident = None
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
            for generation, start, path in self._segments():
                if (
                    generation == ckpt.generation
                    and start > ckpt.offset
                    and (ckpt.segment is None or path != self.record_directory / ckpt.segment)
                ):
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
        self._seg_lines += count
        # The last line is the value of the record at ``last_offset`` (its tail, if the value
        # itself held a newline): what :meth:`matches_log` compares with the log later.
        self._last_crc = line_crc(memoryview(data)[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1])
        self._last_line_offset = last_offset
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
            # so a checkpoint pointing at the new one never covers unsynced bytes; and it
            # must still be where it was, or its records are on no disk.
            self._write_buffer()
            self._sync()
            self._check_open_segment()
            self._close_fd()
        directory = date_dir(self.record_directory, self.out_topic, _EPOCH + dt.timedelta(days=day))
        path = directory / segment_name(self.topic, self.partition, first_offset, self.checkpoint.generation)
        try:
            created = self._mkdirs(directory)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            st = os.fstat(self._fd)
            self._seg_ident = (st.st_dev, st.st_ino)
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
        self._seg_lines = 0
        self._last_crc = None
        self._last_line_offset = None
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
        # Before writing too: a file truncated under the sink would otherwise be re-extended
        # by the pwrite below (a hole where the landed lines were) and pass the size check.
        self._check_open_segment()
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
        """Make everything appended so far durable and checkpoint it: :meth:`write`,
        :meth:`fsync`, :meth:`replace_checkpoint` (:class:`sink.commit.CommitProtocol` runs
        the same steps for all partitions of a worker at once).

        Returns:
            True if a new checkpoint was written (the caller then commits
            ``checkpoint.offset + 1`` to Kafka), False if nothing changed.

        Raises:
            SegmentWriteError: the disk refused; the old checkpoint still holds.
        """
        if not self.dirty:
            return False
        self.write()
        self.fsync()
        self.replace_checkpoint(sync_dir=sync_dir)
        return True

    def write(self) -> None:
        """Commit step 1: clean up any uncommitted tail an earlier failure left, then write the buffer.

        Raises:
            SegmentWriteError: the disk refused; the old checkpoint still holds.
        """
        self._cleanup()
        self._write_buffer()

    def fsync(self) -> None:
        """Commit step 2: fsync the segment (unless ``--fsync never``; its directory entry was
        fsynced when it was created), and check it is still the file the sink opened.

        Raises:
            SegmentWriteError: the disk refused; :class:`SegmentLostError`: the file was
                deleted or replaced (the old checkpoint still holds, or one pointing nowhere).
        """
        self._sync()
        self._check_open_segment()

    def replace_checkpoint(self, *, sync_dir: bool = True) -> None:
        """Commit step 3: atomically replace the checkpoint (offset, segment, length...) with
        what is written and fsynced now. With ``sync_dir=False`` the caller fsyncs the
        checkpoint directory afterwards (:attr:`checkpoint_dir`), once for all partitions.

        Raises:
            SegmentWriteError: the disk refused; the old checkpoint still holds.
        """
        opened = self._seg_rel is not None
        new = Checkpoint(
            offset=self.last_offset,
            segment=self._seg_rel if opened else self.checkpoint.segment,
            length=self._written if opened else self.checkpoint.length,
            lines=self._seg_lines if opened else self.checkpoint.lines,
            last_line_crc=self._last_crc if opened else self.checkpoint.last_line_crc,
            last_line_offset=self._last_line_offset if opened else self.checkpoint.last_line_offset,
            generation=self.checkpoint.generation,
            parked=list(self.parked),
            landed_from={k: list(v) for k, v in self.landed_from.items()},
        )
        try:
            self.store.save(self.topic, self.partition, new, sync_dir=sync_dir)
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: checkpoint write failed: {exc.strerror}", exc.errno) from exc
        self.checkpoint = new

    def _check_open_segment(self) -> None:
        """Raise :class:`SegmentLostError` if the open segment is not, or no longer only, ours.

        Its path must still name the file the sink opened (same device and inode, still
        linked) and the file must hold exactly the bytes written: else it was deleted,
        replaced (``sed -i`` writes a new file) or edited in place under the sink, and what
        was written to it since the checkpoint is on no disk the readers see. Then the
        partition starts a new segment from the checkpoint: if the checkpoint pointed into
        the lost file, it is replaced by one that points nowhere (same offset), so the next
        recovery does not stop on it; the records the lost file held up to the checkpoint
        are gone with it and reported so.
        """
        if self._fd is None or self._seg_rel is None:
            return
        path = self.record_directory / self._seg_rel
        try:
            st_fd = os.fstat(self._fd)
            try:
                st_path: os.stat_result | None = path.stat()
            except FileNotFoundError:
                st_path = None
        except OSError as exc:
            raise SegmentWriteError(f"{self.name}: cannot stat {path}: {exc.strerror}", exc.errno) from exc
        if st_path is None or st_fd.st_nlink == 0:
            what = "was deleted"
        elif (st_path.st_dev, st_path.st_ino) != self._seg_ident:
            what = "was replaced by another file"
        elif st_fd.st_size != self._written:
            what = f"was changed ({st_fd.st_size} bytes, {self._written} written)"
        else:
            return
        ckpt = self.checkpoint
        lost_landed = (ckpt.lines or 0) if ckpt.segment == self._seg_rel else 0
        self._close_fd()
        if ckpt.segment == self._seg_rel:
            ckpt = Checkpoint(
                offset=ckpt.offset,
                generation=ckpt.generation,
                parked=list(ckpt.parked),
                landed_from={k: list(v) for k, v in ckpt.landed_from.items()},
            )
            try:
                self.store.save(self.topic, self.partition, ckpt)
            except OSError as exc:
                raise SegmentWriteError(f"{self.name}: checkpoint write failed: {exc.strerror}", exc.errno) from exc
        # Whatever was buffered or written since the checkpoint is forgotten: it is consumed again.
        self._adopt(ckpt)
        raise SegmentLostError(
            f"{self.name}: open segment {path} {what} under the sink; starting a new segment from "
            f"the checkpoint (offset {ckpt.offset})",
            segment=str(path),
            landed_lines=lost_landed,
        )

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
