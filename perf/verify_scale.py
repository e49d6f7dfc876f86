"""How fast ``bench verify`` is: land a synthetic run as the pipeline would, then time verify.

``python -m perf.verify_scale --clients 1000 --days 100`` writes, in a temporary directory,
a run file (every request acknowledged) and the record directory the pipeline would have
made of it: each report's compact line, in the partition murmur2 maps its userId to (log
order: a client's days in order), under today's ``date=`` folder, with a checkpoint per
partition. Then it runs verify ``--repeat`` times and prints reports/s and peak RSS.
Building the directory is not timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

import msgspec

from bench.identity import format_run_id, new_run_id
from bench.ledger import ClientLedger
from bench.profiles import make_profile
from bench.report import RUN_FORMAT, RUN_VERSION
from bench.verify import verify
from footfall.kafka import partition_for
from footfall.layout import segment_files, segment_path
from footfall.reports import ReportType

__all__ = ["build", "main"]


def build(
    root: Path, clients: int, days: int, *, profile: str = "original", partitions: int = 4, seed: int = 5
) -> tuple[Path, int]:
    """A landed run under ``root`` (``records/`` and ``run.json``); returns (run file, reports)."""
    run_id = new_run_id()
    data = make_profile(profile, seed, dt.date(2018, 1, 1), run_id)
    today = dt.datetime.now(dt.UTC)
    records = root / "records"
    logs: dict[tuple[ReportType, int], list[bytes]] = {}
    ledgers = []
    total = 0
    for index in range(clients):
        client = data.client(index)
        ledger = ClientLedger(index, str(client.user_id))
        key = str(client.user_id).encode()
        for day in range(days):
            for report_type in ReportType:
                lines = client.lines(report_type, day)
                total += lines.count(b"\n")
                logs.setdefault((report_type, partition_for(key, partitions)), []).append(lines)
                ledger.ack(report_type, day)
        ledgers.append(ledger.to_json())
    for report_type in ReportType:
        state = records / "_footfall" / "checkpoints" / str(report_type)
        state.mkdir(parents=True)
        for partition in range(partitions):
            (state / f"{partition}.json").write_text("{}")
            path = segment_path(records, str(report_type), today.date(), partition, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"".join(logs.get((report_type, partition), [])))
    run = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "mode": "closed",
        "profile": profile,
        "seed": seed,
        "run_id": format_run_id(run_id),
        "start_date": "2018-01-01",
        "started_at": today.isoformat(timespec="milliseconds"),
        "elapsed_s": 1.0,
        "ledger": {"clients": ledgers},
    }
    run_file = root / "run.json"
    run_file.write_bytes(msgspec.json.encode(run))
    return run_file, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.verify_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--profile", default="original", choices=("original", "realistic"))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verify-scale-") as tmp:
        run_file, total = build(Path(tmp), args.clients, args.days, profile=args.profile, partitions=args.partitions)
        size = sum(p.stat().st_size for p, _ in segment_files(Path(tmp, "records")))
        print(f"{total:,} reports ({size / 1e6:.0f} MB) in {args.partitions} partitions x 2 topics, {args.profile}")
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            result = verify(run_file, Path(tmp, "records"))
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert result.ok and result.present == total, result.line()
            # CPU time too: on a shared machine the wall clock includes waiting for a core.
            rates = f"{total / elapsed:,.0f} reports/s ({cpu:.2f} s CPU = {total / cpu:,.0f}/s)"
            print(f"verify: {elapsed:.2f} s = {rates}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB (building included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
