"""Unit tests of the perf suite's arithmetic: quantiles, medians, ratios, the regression guard, profiles."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from perf.compare import compare
from perf.procstat import CpuTimes, group_cpu_seconds, group_members, wait_rusage
from perf.profile import by_package, format_top, top_functions
from perf.prometheus import bucket_counts, histogram_quantile, subtract
from perf.results import markdown, median_tree, ratios, summarize

METRICS = """\
# TYPE footfall_sink_e2e_latency_seconds histogram
footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="0.1"} 10
footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="0.5"} 90
footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="1.0"} 100
footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="+Inf"} 100
footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="0.1"} 0
footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="0.5"} 0
footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="1.0"} 100
footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="+Inf"} 100
footfall_sink_e2e_latency_seconds_sum{topic="visit"} 30
"""


def test_buckets_sum_label_sets_and_quantiles_interpolate() -> None:
    counts = bucket_counts(METRICS, "footfall_sink_e2e_latency_seconds")
    assert counts == {0.1: 10, 0.5: 90, 1.0: 200, math.inf: 200}
    assert histogram_quantile(0.5, counts) == pytest.approx(0.5 + 0.5 * (100 - 90) / 110)
    assert histogram_quantile(0.01, counts) == pytest.approx(0.02)
    before = {0.1: 10, 0.5: 90, 1.0: 100, math.inf: 100}
    assert subtract(counts, before) == {0.1: 0, 0.5: 0, 1.0: 100, math.inf: 100}


def test_quantile_of_empty_and_of_the_inf_bucket() -> None:
    assert histogram_quantile(0.99, {}) is None
    assert histogram_quantile(0.99, {1.0: 0, math.inf: 0}) is None
    assert histogram_quantile(0.99, {1.0: 1, math.inf: 10}) == 1.0


def _repeat(mx: float, bare: float, per_report: float) -> dict:
    return {
        "phases": {
            "max": {"requests_per_s": mx, "reports_per_s": mx * 12, "landed_per_s": mx * 12, "cpu": {"gw": 1.0}},
            "per_report": {"requests_per_s": per_report, "reports_per_s": per_report * 12, "landed_per_s": 1.0},
        },
        "references": {
            "bare_sanic": {"requests_per_s": bare},
            "kafka_produce": {"records_per_s": 100_000.0},
            "kafka_consume": {"records_per_s": 200_000.0},
        },
    }


def test_median_tree_and_ratios_per_repeat() -> None:
    assert median_tree([{"a": 1, "b": {"c": 3}}, {"a": 3, "b": {"c": None}}, {"a": 2, "b": {"c": 5}}]) == {
        "a": 2.0,
        "b": {"c": 4.0},
    }
    repeats = [_repeat(1000, 2000, 500), _repeat(3000, 4000, 1000), _repeat(2000, 10_000, 1000)]
    r = ratios(repeats)
    assert r["gateway_vs_bare_sanic"] == pytest.approx(0.5)  # median of 0.5, 0.75, 0.2
    assert r["batched_vs_per_report"] == pytest.approx(2.0)
    assert r["pipeline_vs_kafka_produce"] == pytest.approx(0.24)
    summary = summarize(repeats)
    assert summary["phases"]["max"]["requests_per_s"] == 2000
    assert summary["references"]["bare_sanic"]["requests_per_s"] == 4000


def test_missing_reference_gives_no_ratio() -> None:
    repeat = _repeat(1000, 2000, 500)
    del repeat["references"]["bare_sanic"]
    assert ratios([repeat])["gateway_vs_bare_sanic"] is None


def test_compare_flags_only_drops_beyond_threshold() -> None:
    base = {"summary": {"ratios": {"a": 1.0, "b": 1.0, "c": 1.0, "d": None}}}
    cur = {"summary": {"ratios": {"a": 0.86, "b": 0.84, "c": 2.0, "d": 1.0}}}
    changes = {c.name: c for c in compare(base, cur, 0.15)}
    assert not changes["a"].regressed
    assert changes["b"].regressed
    assert not changes["c"].regressed
    assert changes["d"].change is None and not changes["d"].regressed


def test_markdown_lists_phases_references_ratios_and_verification() -> None:
    repeats = [_repeat(1000, 2000, 500)]
    content = {
        "timestamp": "20260101T000000Z",
        "command": "python -m perf e2e",
        "machine": {"cpus": 2, "cpu_model": "x", "memory_gb": 1, "load_average": [0, 0, 0], "versions": {}},
        "settings": {
            "repeats": 1,
            "duration": 1,
            "concurrent_clients": 1,
            "gateway_workers": 1,
            "sink_workers": 1,
            "partitions": 1,
        },
        "summary": summarize(repeats),
        "verification": [{"repeat": 0, "phase": "max", "ok": False, "line": "lost=3"}],
    }
    text = markdown(content)
    assert "| max |" in text and "| bare_sanic |" in text and "| batched_vs_per_report | 2.000 |" in text
    assert "FAILED: repeat 0 max: lost=3" in text


def test_cpu_of_a_process_group_includes_reaped_workers(tmp_path: Path) -> None:
    script = tmp_path / "spin.py"
    script.write_text(
        "import multiprocessing as m, sys, time\n"
        "def spin():\n"
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end: pass\n"
        "if __name__ == '__main__':\n"
        "    p = m.get_context('spawn').Process(target=spin); p.start(); p.join()\n"
        "    open(sys.argv[1], 'w').close()\n"
        "    time.sleep(30)\n"
    )
    done = tmp_path / "done"
    proc = subprocess.Popen([sys.executable, str(script), str(done)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not done.exists():
            assert proc.poll() is None, "the script died"
            assert time.monotonic() < deadline, "the worker never finished"
            time.sleep(0.05)
        assert proc.pid in group_members(proc.pid)
        assert group_cpu_seconds(proc.pid) >= 0.3  # the reaped worker's CPU is in the parent's cutime
        assert (CpuTimes.take({"g": proc.pid}) - CpuTimes({"g": 0.0}))["g"] >= 0.3
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_wait_rusage_measures_a_finished_child() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"]
    )
    code, cpu, rss = wait_rusage(proc, timeout=30)
    assert code == 0 and proc.returncode == 0
    assert cpu >= 0.2
    assert rss > 1_000_000


def test_top_functions_from_speedscope() -> None:
    speedscope = {
        "shared": {
            "frames": [
                {"name": "main", "file": "/x/site-packages/sanic/app.py", "line": 1},
                {"name": "handler", "file": "/repo/gateway/app.py", "line": 2},
                {"name": "decode", "file": "/repo/footfall/reports.py", "line": 3},
            ]
        },
        "profiles": [
            {"type": "sampled", "samples": [[0, 1, 2], [0, 1], [0, 1, 2], [0]], "weights": [1, 1, 1, 1]},
        ],
    }
    functions, grand = top_functions(orjson.loads(orjson.dumps(speedscope)))
    assert grand == 4
    assert [(f.name, f.own, f.total) for f in functions] == [("decode", 2, 2), ("main", 1, 4), ("handler", 1, 3)]
    assert functions[0].file == "/repo/footfall/reports.py" or functions[0].file.endswith("footfall/reports.py")
    assert "| 50.0 | 50.0 | `decode` |" in format_top(functions, grand, 2)
    assert "sanic" in by_package(functions, grand)
