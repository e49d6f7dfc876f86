"""The sink's metrics (one :class:`SinkMetrics` per process, aggregated by the supervisor).

Names (Prometheus; ``topic`` is the topic whose directory the files are in):

- ``footfall_sink_records_written_total{topic}``: records in fsynced files (counted when the
  checkpoint covering them is written);
- ``footfall_sink_bytes_written_total{topic}``;
- ``footfall_sink_e2e_latency_seconds{topic}``: checkpoint time minus the gateway's
  ``ff-received-ms`` header, sampled (first record of each fetched batch and every 64th);
- ``footfall_sink_fsync_seconds{topic}``, ``footfall_sink_commit_seconds{topic}``: latency of one
  segment fsync, of one partition's whole commit (write, fsync, checkpoint);
- ``footfall_sink_assigned_partitions{group}``: partitions this instance holds;
- ``footfall_sink_dlq_records_total{topic}``, ``footfall_sink_retry_parked_records_total{topic}``,
  ``footfall_sink_retry_landed_records_total{topic}``, ``footfall_sink_retry_skipped_records_total{topic}``;
- ``footfall_sink_write_errors_total{topic,errno}``; ``footfall_sink_recoveries_total{topic}``;
- ``footfall_sink_offset_gaps_total{topic}``: offset gaps accepted after ``--gap-timeout`` (records
  skipped for good); ``footfall_sink_offset_gap_refetches_total{topic}``: gaps that healed when the
  partition was fetched again (nothing lost). Here ``topic`` is the consumed topic (``visit`` or
  ``visit.retry``), since the gap is in that topic's offsets;
- ``footfall_sink_lag_records{topic,partition}``: records of the partition not landed yet (its
  end offset, asked every few seconds, minus the next offset to land), reported by its owner;
- ``footfall_sink_lock_waiting_partitions{topic}``: partitions assigned here whose file lock another
  process still holds (paused meanwhile; the others keep landing);
  ``footfall_sink_lock_waits_total{topic}``, ``footfall_sink_lock_wait_seconds{topic}``: such waits,
  and how long each lasted until the lock was taken; ``footfall_sink_lock_blocked_partitions{topic,partition}``:
  1 while such a wait has lasted longer than ``--lock-timeout`` (``/readyz`` is false then);
- ``footfall_sink_worker_stalls_total{reason}``: workers stopped for a restart because their fetch
  task died (``fetcher``) or a partition with lag got no record for ``--stall-timeout`` (``no_progress``);
- ``footfall_sink_log_restarts_total{topic}``: partitions whose checkpoint was ahead of the log's end
  (the log started over): their new log lands in files of a new generation;
  ``footfall_sink_retention_lost_records_total{topic}``: records removed from the log (retention)
  before they landed (``topic`` = the consumed topic, as for gaps);
- ``footfall_sink_bad_checkpoint_partitions{topic}``: partitions paused because their checkpoint is
  invalid or does not fit the files (the others go on);
- ``footfall_sink_segments_lost_total{topic}``: open segments found deleted, replaced or changed under
  the sink (a new segment starts from the checkpoint);
- ``footfall_sink_worker_ready``: 1 per worker whose consumers are running;
- supervisor: ``footfall_sink_workers_alive``, ``footfall_sink_worker_restarts_total``,
  ``footfall_sink_workers_killed_unresponsive_total``.
"""

from __future__ import annotations

from footfall.metrics import LATENCY_BUCKETS, MetricSet, counter, gauge, histogram

__all__ = ("SinkMetrics", "SupervisorMetrics")

_E2E_BUCKETS = (*LATENCY_BUCKETS[:-1], 30.0, 60.0, 300.0)


class SinkMetrics(MetricSet):
    """Metrics a worker process records."""

    records_written = counter(
        "footfall_sink_records_written_total", "records landed in fsynced, checkpointed files", ("topic",)
    )
    bytes_written = counter("footfall_sink_bytes_written_total", "bytes landed in files", ("topic",))
    e2e_latency = histogram(
        "footfall_sink_e2e_latency_seconds",
        "checkpoint time minus gateway receive time (ff-received-ms), sampled",
        ("topic",),
        buckets=_E2E_BUCKETS,
    )
    fsync_seconds = histogram("footfall_sink_fsync_seconds", "one segment fsync", ("topic",))
    commit_seconds = histogram(
        "footfall_sink_commit_seconds", "one partition's commit: write, fsync, checkpoint", ("topic",)
    )
    assigned = gauge("footfall_sink_assigned_partitions", "partitions assigned", ("group",))
    dlq = counter("footfall_sink_dlq_records_total", "poison records sent to <topic>.dlq", ("topic",))
    parked = counter(
        "footfall_sink_retry_parked_records_total", "records parked on <topic>.retry (write failures)", ("topic",)
    )
    retry_landed = counter(
        "footfall_sink_retry_landed_records_total", "parked records landed from <topic>.retry", ("topic",)
    )
    retry_skipped = counter(
        "footfall_sink_retry_skipped_records_total",
        "records on <topic>.retry skipped as already landed (parked twice, or landed directly)",
        ("topic",),
    )
    write_errors = counter("footfall_sink_write_errors_total", "failed writes/fsyncs/checkpoints", ("topic", "errno"))
    offset_gaps = counter(
        "footfall_sink_offset_gaps_total",
        "offset gaps accepted after --gap-timeout (the missing offsets are skipped)",
        ("topic",),
    )
    offset_gap_refetches = counter(
        "footfall_sink_offset_gap_refetches_total",
        "offset gaps that healed when the partition was fetched again (nothing skipped)",
        ("topic",),
    )
    recoveries = counter("footfall_sink_recoveries_total", "partition recoveries on assignment", ("topic",))
    lag = gauge(
        "footfall_sink_lag_records",
        "records of the partition not landed yet (end offset - next offset)",
        ("topic", "partition"),
    )
    lock_waiting = gauge(
        "footfall_sink_lock_waiting_partitions",
        "assigned partitions paused until another process releases their file lock",
        ("topic",),
    )
    lock_blocked = gauge(
        "footfall_sink_lock_blocked_partitions",
        "1 per partition that has waited for its file lock longer than --lock-timeout (/readyz false)",
        ("topic", "partition"),
    )
    lock_waits = counter(
        "footfall_sink_lock_waits_total", "assignments that found the partition's lock held", ("topic",)
    )
    lock_wait_seconds = histogram(
        "footfall_sink_lock_wait_seconds",
        "how long a wait for a held partition lock lasted (until taken or revoked)",
        ("topic",),
        buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    )
    stalls = counter(
        "footfall_sink_worker_stalls_total",
        "workers stopped for a restart: fetcher died or no progress",
        ("reason",),
    )
    log_restarts = counter(
        "footfall_sink_log_restarts_total",
        "partitions whose checkpoint was ahead of the log: new log generation",
        ("topic",),
    )
    retention_lost = counter(
        "footfall_sink_retention_lost_records_total",
        "records removed from the log (retention) before they landed",
        ("topic",),
    )
    bad_checkpoints = gauge(
        "footfall_sink_bad_checkpoint_partitions",
        "partitions paused on an invalid checkpoint until it is fixed",
        ("topic",),
    )
    segments_lost = counter(
        "footfall_sink_segments_lost_total",
        "open segments deleted, replaced or changed under the sink",
        ("topic",),
    )
    ready = gauge("footfall_sink_worker_ready", "1 per worker whose consumers are running")


class SupervisorMetrics(MetricSet):
    """Metrics the supervisor records (live registry of /metrics)."""

    alive = gauge("footfall_sink_workers_alive", "worker processes alive")
    restarts = counter("footfall_sink_worker_restarts_total", "worker processes restarted after dying")
    unresponsive = counter(
        "footfall_sink_workers_killed_unresponsive_total",
        "workers killed for a restart because their metrics snapshot went stale for --stall-timeout",
    )
