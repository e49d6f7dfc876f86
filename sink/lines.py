"""A checked batch into a partition's segment lines: one value per line, split by UTC day.

A record lands in the ``date=`` folder of its timestamp's UTC day (:mod:`footfall.layout`),
so a batch that spans midnight goes into two segments. The common case, a batch within one
day, costs one list comprehension and, when the poison check joined the values already
(:attr:`sink.poison.CheckResult.lines`), no join at all.
"""

from __future__ import annotations

from typing import Final

from footfall.kafka import HEADER_RECEIVED_MS
from footfall.layout import MS_PER_DAY
from sink.consumer import KafkaRecord
from sink.writer import PartitionWriter

__all__ = ["append_batch"]

#: Sample the end-to-end latency of every Nth record (and the first of each batch).
_LATENCY_SAMPLE: Final = 64


def _received_ms(record: KafkaRecord) -> int | None:
    for key, value in record.headers:
        if key == HEADER_RECEIVED_MS:
            return int(value) if value.isdigit() else None
    return None


def append_batch(writer: PartitionWriter, good: list[KafkaRecord], lines: bytes | None) -> None:
    """Buffer ``good`` (valid records, in offset order) in ``writer``, a run per UTC day.

    ``lines``: the values already joined as lines, if the poison check made them. The
    gateway receive times of every 64th record are kept for the end-to-end latency.

    Raises:
        SegmentWriteError: the disk refused (see :meth:`PartitionWriter.append`).
    """
    # Per-record work here is list comprehensions only; the bytes go in with one join.
    days = [r.timestamp // MS_PER_DAY for r in good]
    first_day = days[0]
    if days.count(first_day) == len(days):
        data = lines if lines is not None else b"\n".join([r.value for r in good]) + b"\n"  # type: ignore[misc]
        writer.append(data, len(good), good[-1].offset, good[0].offset, first_day)
    else:
        start = 0
        for i in range(1, len(good) + 1):
            if i == len(good) or days[i] != days[start]:
                run = good[start:i]
                data = b"\n".join([r.value for r in run]) + b"\n"  # type: ignore[misc]
                writer.append(data, len(run), run[-1].offset, run[0].offset, days[start])
                start = i
    samples = writer.pending_received_ms
    for record in good[::_LATENCY_SAMPLE]:
        received = _received_ms(record)
        if received is not None:
            samples.append(received)
