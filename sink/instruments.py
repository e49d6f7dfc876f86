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
- ``footfall_sink_worker_ready``: 1 per worker whose consumers are running;
- supervisor: ``footfall_sink_workers_alive``, ``footfall_sink_worker_restarts_total``.
"""

from __future__ import annotations

from footfall.metrics import LATENCY_BUCKETS, Registry

__all__ = ["SinkMetrics", "SupervisorMetrics"]

_E2E_BUCKETS = (*LATENCY_BUCKETS[:-1], 30.0, 60.0, 300.0)


class SinkMetrics:
    """Metrics a worker process records."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.records_written = r.counter(
            "footfall_sink_records_written_total", "records landed in fsynced, checkpointed files", ["topic"]
        )
        self.bytes_written = r.counter("footfall_sink_bytes_written_total", "bytes landed in files", ["topic"])
        self.e2e_latency = r.histogram(
            "footfall_sink_e2e_latency_seconds",
            "checkpoint time minus gateway receive time (ff-received-ms), sampled",
            ["topic"],
            buckets=_E2E_BUCKETS,
        )
        self.fsync_seconds = r.histogram("footfall_sink_fsync_seconds", "one segment fsync", ["topic"])
        self.commit_seconds = r.histogram(
            "footfall_sink_commit_seconds", "one partition's commit: write, fsync, checkpoint", ["topic"]
        )
        self.assigned = r.gauge("footfall_sink_assigned_partitions", "partitions assigned", ["group"])
        self.dlq = r.counter("footfall_sink_dlq_records_total", "poison records sent to <topic>.dlq", ["topic"])
        self.parked = r.counter(
            "footfall_sink_retry_parked_records_total", "records parked on <topic>.retry (write failures)", ["topic"]
        )
        self.retry_landed = r.counter(
            "footfall_sink_retry_landed_records_total", "parked records landed from <topic>.retry", ["topic"]
        )
        self.retry_skipped = r.counter(
            "footfall_sink_retry_skipped_records_total",
            "records on <topic>.retry skipped as already landed (parked twice, or landed directly)",
            ["topic"],
        )
        self.write_errors = r.counter(
            "footfall_sink_write_errors_total", "failed writes/fsyncs/checkpoints", ["topic", "errno"]
        )
        self.offset_gaps = r.counter(
            "footfall_sink_offset_gaps_total",
            "offset gaps accepted after --gap-timeout (the missing offsets are skipped)",
            ["topic"],
        )
        self.offset_gap_refetches = r.counter(
            "footfall_sink_offset_gap_refetches_total",
            "offset gaps that healed when the partition was fetched again (nothing skipped)",
            ["topic"],
        )
        self.recoveries = r.counter("footfall_sink_recoveries_total", "partition recoveries on assignment", ["topic"])
        self.ready = r.gauge("footfall_sink_worker_ready", "1 per worker whose consumers are running")


class SupervisorMetrics:
    """Metrics the supervisor records (live registry of /metrics)."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.alive = r.gauge("footfall_sink_workers_alive", "worker processes alive")
        self.restarts = r.counter("footfall_sink_worker_restarts_total", "worker processes restarted after dying")
