"""Metrics: Prometheus text, and aggregation over processes (dead ones keep their counters)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from pathlib import Path

import orjson
import pytest

from footfall.metrics import MetricSet, Registry, SnapshotWriter, collect, counter, gauge, histogram, render


def _registry(requests: float, inflight: float) -> Registry:
    reg = Registry()
    reg.counter("req_total", "requests", ["route", "status"]).labels("visit", "200").inc(requests)
    reg.gauge("inflight_bytes", "bytes").set(inflight)
    hist = reg.histogram("latency_seconds", "latency", buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        hist.observe(v)
    return reg


def test_render_exposition_format() -> None:
    text = render([_registry(3, 10).snapshot()])
    assert "# TYPE req_total counter" in text
    assert 'req_total{route="visit",status="200"} 3' in text
    assert "inflight_bytes 10" in text
    assert 'latency_seconds_bucket{le="0.1"} 2' in text  # upper bounds are inclusive
    assert 'latency_seconds_bucket{le="1"} 3' in text
    assert 'latency_seconds_bucket{le="+Inf"} 4' in text
    assert "latency_seconds_count 4" in text
    assert "latency_seconds_sum 3.65" in text


def test_label_values_are_escaped() -> None:
    reg = Registry()
    reg.counter("c_total", "c", ["path"]).labels('a"b\\c\nd').inc()
    assert 'c_total{path="a\\"b\\\\c\\nd"} 1' in render([reg.snapshot()])


def _dead_snapshot(directory: Path) -> int:
    proc = multiprocessing.get_context("spawn").Process(target=int)
    proc.start()
    proc.join()
    snap = _registry(5, 100).snapshot()
    snap["pid"] = proc.pid  # a process that has exited
    (directory / f"{proc.pid}.json").write_bytes(orjson.dumps(snap))
    return proc.pid


def test_collect_sums_counters_over_processes_and_drops_dead_gauges(tmp_path: Path) -> None:
    _dead_snapshot(tmp_path)
    text = collect(tmp_path, _registry(2, 7))
    assert 'req_total{route="visit",status="200"} 7' in text  # 5 (dead) + 2 (live)
    assert "inflight_bytes 7" in text  # the dead process's gauge is gone
    assert 'latency_seconds_bucket{le="+Inf"} 8' in text


def test_snapshot_writer_writes_atomically_and_on_stop(tmp_path: Path) -> None:
    reg = _registry(1, 1)

    async def run() -> None:
        writer = SnapshotWriter(reg, tmp_path, interval=0.01)
        writer.start()
        await asyncio.sleep(0.05)
        reg.counter("late_total", "added after start").inc(4)
        await writer.stop()

    asyncio.run(run())
    [path] = tmp_path.glob("*.json")
    assert orjson.loads(path.read_bytes())["metrics"]["late_total"]["samples"] == {"": 4.0}
    assert not list(tmp_path.glob("*.tmp"))


def test_every_exposition_has_build_info_and_live_process_metrics(tmp_path: Path) -> None:
    from footfall import __version__

    dead = _dead_snapshot(tmp_path)  # a process that exited: its process_* series must not appear
    text = collect(tmp_path, _registry(1, 1))
    assert f'footfall_build_info{{version="{__version__}",python="' in text
    assert "# TYPE process_cpu_seconds_total counter" in text
    own = os.getpid()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        (line,) = [x for x in text.splitlines() if x.startswith(name + "{")]
        assert line.startswith(f'{name}{{pid="{own}"}} ')
        assert float(line.split()[1]) > 0
    assert f'pid="{dead}"' not in text
    (start,) = [x for x in text.splitlines() if x.startswith("process_start_time_seconds{")]
    assert time.time() - 3600 < float(start.split()[1]) <= time.time() + 1  # this test process started just now


class _Example(MetricSet):
    served = counter("example_served_total", "requests served", ("route",))
    inflight = gauge("example_inflight", "requests in flight")
    seconds = histogram("example_seconds", "time per request", buckets=(0.5, 1.0))


def test_a_metric_set_creates_its_declared_metrics_in_its_own_registry() -> None:
    first, second = _Example(), _Example()
    first.served.labels("/a").inc(2)
    first.inflight.set(3)
    first.seconds.observe(0.7)
    text = render([first.registry.snapshot()])
    assert "# HELP example_served_total requests served\n# TYPE example_served_total counter\n" in text
    assert 'example_served_total{route="/a"} 2\n' in text
    assert "example_inflight 3\n" in text
    assert 'example_seconds_bucket{le="1"} 1\n' in text
    # Another instance (another process, another test) starts from zero in its own registry.
    assert second.registry is not first.registry
    assert "example_served_total{" not in render([second.registry.snapshot()])


def test_a_metric_set_can_record_into_a_given_registry() -> None:
    registry = Registry()
    metrics = _Example(registry)
    assert metrics.registry is registry
    with pytest.raises(ValueError, match="registered twice"):
        _Example(registry)  # the same names twice in one exposition would be ambiguous


def test_a_counter_cannot_go_down() -> None:
    served = _Example().served.labels("/a")
    served.inc()
    with pytest.raises(ValueError, match="only goes up"):
        served.inc(-1)
    assert not hasattr(served, "dec")
    assert not hasattr(served, "set")
    assert served.value == 1


def test_a_gauge_goes_both_ways() -> None:
    inflight = _Example().inflight
    inflight.inc(3)
    inflight.dec()
    assert inflight.labels().value == 2
    inflight.set(7)
    assert inflight.labels().value == 7


def test_label_values_must_match_the_label_names() -> None:
    metrics = _Example()
    with pytest.raises(ValueError, match="has labels"):
        metrics.served.labels("/a", "200")
    with pytest.raises(ValueError, match="has labels"):
        metrics.served.inc()  # a labelled counter has no unlabelled series
