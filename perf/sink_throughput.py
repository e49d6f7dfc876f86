"""Sink throughput against kcat on the same pre-filled topic, in the same run.

    PYTHONPATH=. python perf/sink_throughput.py [--records 1000000] [--runs 2] [--json out.json]

Steps:
    1. start the embedded broker (or use ``--brokers``), create a topic, fill it with
       ``--records`` gateway-like records (key userId, compact report value, ff-* headers)
       using confluent_kafka's producer (C speed, so filling is not the bottleneck);
    2. reference: ``kcat -C -o beginning -e -f '%s\\n' > file`` (librdkafka 2.16 from the
       confluent-kafka wheel via LD_LIBRARY_PATH: Debian's kcat links 2.0.2, which cannot
       talk to the embedded broker), timed from process start to exit; second reference:
       one aiokafka ``getmany`` loop writing the values to a buffered file (the brief's
       "≈ 0.45x of kcat" calibration), timed from client start;
    3. the sink with its default settings (``python -m sink``, fsync before commit, poison
       check on), timed until the checkpoints cover every record (i.e. every record is in
       a fsynced, checkpointed file): from the first segment file's creation (excludes
       process start and the consumer group join, which includes the broker's initial
       rebalance delay), from process start, and "steady" between the checkpoints
       covering 10 % and 90 % of the records (excludes a late second worker, too); and
       the CPU seconds (utime + stime from ``/proc``, supervisor + workers, one process
       group) per million records after the first file, which is far less sensitive
       to other load on the machine than the wall-clock rates (kcat's CPU from ``wait4``);
    4. repeat ``--runs`` times, alternating, and report rates and the ratio sink/kcat:
       best run of each, and the median of the per-run ratios (kcat and sink measured
       back to back); these machines are noisy, the ratio is what to compare.
    5. optionally (``--latency-rate R``), produce at R records/s with ``ff-received-ms``
       set at send time while the sink runs, and report the sink's end-to-end latency
       percentiles (from its ``footfall_sink_e2e_latency_seconds`` histogram).

(A little over 400 lines: one benchmark, its steps above in order over one topic's state.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from footfall import promtext
from footfall.generator import day_start_ms, original_visits, user_id
from footfall.kafka import HEADER_RECEIVED_MS, HEADER_REQUEST_ID, HEADER_SCHEMA, HEADER_TYPE, ensure_topics
from footfall.reports import encode_report
from perf.procstat import group_cpu_seconds
from stack.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]


def _librdkafka_dir(tmp: Path) -> Path:
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    lib = next(libs.glob("librdkafka*.so*"))
    out = tmp / "rdkafka"
    out.mkdir(exist_ok=True)
    link = out / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(lib)
    return out


def _values(count: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes]] = []
    day = day_start_ms(__import__("datetime").date(2018, 1, 1), 0)
    while len(out) < count:
        uid = user_id(rng)
        out += [(str(uid).encode(), encode_report(v)) for v in original_visits(rng, uid, day)]
    return out[:count]


def fill(brokers: str, topic: str, records: int, rate: float | None = None, duration: float | None = None) -> int:
    """Produce ``records`` (or ``rate`` x ``duration``) gateway-like records; returns bytes of values."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": False,
            "acks": "all",
            "linger.ms": 20 if rate is None else 1,
            "batch.size": 1 << 20,
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "none",
        }
    )
    pool = _values(20_000)
    total = 0
    start = time.monotonic()
    n = records if rate is None else int(rate * (duration or 0))
    for i in range(n):
        if rate is not None:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0.002:
                time.sleep(delay)  # pacing the offered load
        key, value = pool[i % len(pool)]
        now_ms = int(time.time() * 1000)
        headers: list[tuple[str, str | bytes | None]] = [
            (HEADER_TYPE, b"visit"),
            (HEADER_SCHEMA, b"1"),
            (HEADER_RECEIVED_MS, str(now_ms).encode()),
            (HEADER_REQUEST_ID, b"perf-%d" % i),
        ]
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, timestamp=now_ms)
                break
            except BufferError:
                producer.poll(0.05)
        total += len(value)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return total


def run_kcat(brokers: str, topic: str, records: int, tmp: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) of one kcat run consuming the topic into a file."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(_librdkafka_dir(tmp))}
    out = tmp / "kcat.out"
    started = time.perf_counter()
    with out.open("wb") as f:
        proc = subprocess.Popen(
            ["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\\n"],
            stdout=f,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, f"kcat exited {proc.returncode}"
    elapsed = time.perf_counter() - started
    with out.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    assert lines == records, f"kcat wrote {lines} lines, expected {records}"
    out.unlink()
    return elapsed, usage.ru_utime + usage.ru_stime


async def _aiokafka_loop(brokers: str, topic: str, records: int, out: Path) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, auto_offset_reset="earliest")
    started = time.perf_counter()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        seen = 0
        with out.open("wb") as f:
            while seen < records:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    seen += len(msgs)
                    f.write(b"\n".join([m.value for m in msgs]) + b"\n")
        return time.perf_counter() - started
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka 0.14, group-less consumer
            await consumer.stop()


def run_aiokafka_loop(brokers: str, topic: str, records: int, tmp: Path) -> float:
    """Second reference: one aiokafka ``getmany`` loop writing values to a buffered file
    (no validation, no fsync, no commit): the Python-client floor the sink builds on."""
    out = tmp / "aiokafka.out"
    elapsed = asyncio.run(_aiokafka_loop(brokers, topic, records, out))
    out.unlink()
    return elapsed


def _checkpointed(record_dir: Path, topic: str) -> int:
    total = 0
    for path in (record_dir / "_footfall" / "checkpoints" / topic).glob("*.json"):
        with contextlib.suppress(OSError, ValueError):  # being replaced right now
            total += json.loads(path.read_bytes())["offset"] + 1
    return total


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def start_sink(
    brokers: str, topic: str, record_dir: Path, extra: list[str], log: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    stderr = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sink",
            "--brokers",
            brokers,
            "--groups",
            f"perf-{uuid.uuid4().hex[:8]}:{topic}",
            "--record-directory",
            str(record_dir),
            "--metrics-port",
            str(port),
            *extra,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        cwd=REPO,
        start_new_session=True,  # supervisor + workers in one process group (CPU accounting)
    )
    return proc, port


def run_sink(brokers: str, topic: str, records: int, tmp: Path, extra: list[str]) -> dict[str, float]:
    record_dir = tmp / f"records-{uuid.uuid4().hex[:6]}"
    log = tmp / "sink.log"
    log.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc, _port = start_sink(brokers, topic, record_dir, extra, log)
    first = p10 = p90 = None
    cpu_first = 0.0
    try:
        while True:
            if first is None and next((record_dir / topic).glob("date=*/*.jsonl"), None) is not None:
                first = time.perf_counter()
                cpu_first = group_cpu_seconds(proc.pid)
            landed = _checkpointed(record_dir, topic)
            if p10 is None and landed >= records * 0.1:
                p10 = time.perf_counter()
            if p90 is None and landed >= records * 0.9:
                p90 = time.perf_counter()
            if landed >= records:
                break
            if proc.poll() is not None:
                raise RuntimeError("the sink exited early")
            time.sleep(0.01)  # polling the files and checkpoints
        done = time.perf_counter()
        # utime + stime of the supervisor and its workers (/proc): less sensitive to the
        # machine's load than wall time. Total includes start-up (imports, group join).
        cpu_done = group_cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    lines = sum(p.read_bytes().count(b"\n") for p in (record_dir / topic).glob("date=*/*.jsonl"))
    assert lines == records, f"sink landed {lines} lines, expected {records}"
    shutil.rmtree(record_dir)
    assignments = log.read_text().count('"partitions assigned"')
    return {
        "total_s": done - started,
        "from_first_file_s": done - (first or started),
        # steady state: 80 % of the records, between the checkpoints covering 10 % and 90 %
        "steady_msgs_per_s": records * 0.8 / ((p90 or done) - (p10 or started)),
        "assignments": assignments,
        "loadavg_1m": load,
        "cpu_s_total": cpu_done,
        "cpu_s_per_m_records": (cpu_done - cpu_first) / records * 1e6,
    }


def _percentiles(text: str, name: str) -> dict[str, float]:
    buckets = sorted((float(s.labels["le"]), s.value) for s in promtext.samples(text) if s.name == name + "_bucket")
    total = buckets[-1][1] if buckets else 0
    out: dict[str, float] = {"count": total}
    for q in (0.5, 0.9, 0.99):
        for bound, cum in buckets:
            if total and cum >= q * total:
                out[f"p{int(q * 100)}_le"] = bound
                break
    return out


def latency(brokers: str, rate: float, duration: float, tmp: Path, extra: list[str]) -> dict[str, float]:
    topic = f"perf-lat-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(brokers, [topic], 4, 1))
    record_dir = tmp / "latency"
    proc, port = start_sink(brokers, topic, record_dir, extra)
    try:
        deadline = time.monotonic() + 60
        while _get(port, "/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("sink not ready")
            time.sleep(0.05)
        time.sleep(3)  # let the group settle (second worker's rebalance) before offering load
        fill(brokers, topic, 0, rate=rate, duration=duration)
        expected = int(rate * duration)
        while _checkpointed(record_dir, topic) < expected:
            time.sleep(0.05)
        time.sleep(1.5)  # one metrics snapshot interval
        _status, text = _get(port, "/metrics")
    finally:
        proc.terminate()
        proc.wait(30)
    shutil.rmtree(record_dir, ignore_errors=True)
    return {"rate": rate, "duration_s": duration, **_percentiles(text, "footfall_sink_e2e_latency_seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", help="use this cluster instead of an embedded broker")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sink-arg", action="append", default=[], help="extra sink flag (repeatable)")
    parser.add_argument(
        "--latency-rate", type=float, action="append", default=[], help="records/s of a latency run (repeatable)"
    )
    parser.add_argument("--latency-duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    broker = None if args.brokers else EmbeddedBroker().start()
    brokers = args.brokers or broker.bootstrap  # type: ignore[union-attr]
    tmp = Path(tempfile.mkdtemp(prefix="footfall-perf-sink-"))
    try:
        topic = f"perf-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topics(brokers, [topic], args.partitions, 1))
        t0 = time.perf_counter()
        value_bytes = fill(brokers, topic, args.records)
        print(
            f"filled {topic}: {args.records} records, {value_bytes / 1e6:.1f} MB of values "
            f"in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        kcat_runs, loop_runs, sink_runs = [], [], []
        kcat_cpu: list[float] = []
        for run in range(args.runs):
            k, k_cpu = run_kcat(brokers, topic, args.records, tmp)
            kcat_runs.append(k)
            kcat_cpu.append(k_cpu / args.records * 1e6)
            print(
                f"run {run}: kcat {args.records / k:,.0f} msg/s ({value_bytes / k / 1e6:.0f} MB/s; "
                f"{kcat_cpu[-1]:.2f} CPU-s per M records)",
                flush=True,
            )
            a = run_aiokafka_loop(brokers, topic, args.records, tmp)
            loop_runs.append(a)
            print(f"run {run}: aiokafka getmany loop {args.records / a:,.0f} msg/s (ratio {k / a:.2f})", flush=True)
            s = run_sink(brokers, topic, args.records, tmp, args.sink_arg)
            sink_runs.append(s)
            print(
                f"run {run}: sink {args.records / s['from_first_file_s']:,.0f} msg/s from first file "
                f"({args.records / s['total_s']:,.0f} msg/s from process start; "
                f"{s['steady_msgs_per_s']:,.0f} msg/s steady, 10%->90%); "
                f"ratio {k / s['from_first_file_s']:.2f}; "
                f"{s['assignments']:.0f} assignment callbacks; load avg {s['loadavg_1m']:.1f}; "
                f"sink CPU {s['cpu_s_per_m_records']:.2f} s per M records after the first file "
                f"({s['cpu_s_total']:.1f} s in all)",
                flush=True,
            )
        best_k = min(kcat_runs)
        best_s = min(s["from_first_file_s"] for s in sink_runs)
        best_total = min(s["total_s"] for s in sink_runs)
        result: dict[str, Any] = {
            "records": args.records,
            "partitions": args.partitions,
            "value_bytes": value_bytes,
            "kcat_msgs_per_s": args.records / best_k,
            "sink_msgs_per_s_steady": args.records / best_s,
            "sink_msgs_per_s_from_start": args.records / best_total,
            "ratio_steady": best_k / best_s,
            "ratio_from_start": best_k / best_total,
            "ratio_per_run": [k / s["from_first_file_s"] for k, s in zip(kcat_runs, sink_runs, strict=True)],
            "ratio_steady_per_run": [
                s["steady_msgs_per_s"] / (args.records / k) for k, s in zip(kcat_runs, sink_runs, strict=True)
            ],
            "kcat_runs_s": kcat_runs,
            "aiokafka_loop_runs_s": loop_runs,
            "aiokafka_loop_ratio_per_run": [k / a for k, a in zip(kcat_runs, loop_runs, strict=True)],
            "sink_vs_aiokafka_loop_per_run": [
                a / s["from_first_file_s"] for a, s in zip(loop_runs, sink_runs, strict=True)
            ],
            "sink_runs": sink_runs,
            "sink_args": args.sink_arg,
            "kcat_cpu_s_per_m_records": kcat_cpu,
            "sink_cpu_s_per_m_records": [s["cpu_s_per_m_records"] for s in sink_runs],
        }
        result["ratio_median_per_run"] = statistics.median(result["ratio_per_run"])
        result["aiokafka_loop_ratio_median"] = statistics.median(result["aiokafka_loop_ratio_per_run"])
        result["sink_vs_aiokafka_loop_median"] = statistics.median(result["sink_vs_aiokafka_loop_per_run"])
        result["ratio_steady_median_per_run"] = statistics.median(result["ratio_steady_per_run"])
        result["sink_cpu_s_per_m_records_median"] = statistics.median(result["sink_cpu_s_per_m_records"])
        print(
            f"ratio sink/kcat, best runs: {result['ratio_steady']:.2f} (from first file), "
            f"{result['ratio_from_start']:.2f} (from process start); median of per-run ratios: "
            f"{result['ratio_median_per_run']:.2f} (from first file), "
            f"{result['ratio_steady_median_per_run']:.2f} (steady 10%->90%); aiokafka loop/kcat "
            f"{result['aiokafka_loop_ratio_median']:.2f}; "
            f"sink/aiokafka loop {result['sink_vs_aiokafka_loop_median']:.2f}; sink CPU "
            f"{result['sink_cpu_s_per_m_records_median']:.2f} s per M records (median)",
            flush=True,
        )
        result["latency"] = []
        for rate in args.latency_rate:
            lat = latency(brokers, rate, args.latency_duration, tmp, args.sink_arg)
            result["latency"].append(lat)
            print(f"latency at {rate:,.0f} msg/s: {lat}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
