"""CI smoke run of ``python -m perf e2e --quick``: the runner works, every figure is there, nothing was lost.

Never a speed threshold: CI machines are shared and noisy; the figures only have to exist.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

PHASE_FIGURES = (
    "requests_per_s",
    "reports_per_s",
    "landed_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_p999_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
)
ROLES = ("gateway", "sink", "broker", "bench")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    out = tmp_path_factory.mktemp("perf")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf",
            "e2e",
            "--quick",
            "--results-directory",
            str(out / "results"),
            "--work-directory",
            str(out / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    files = sorted((out / "results").glob("*.json"))
    assert files, f"no results file; exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result, orjson.loads(files[-1].read_bytes()), files[-1]


@pytest.mark.timeout(180)
def test_runner_succeeds_and_writes_json_and_markdown(quick_run: tuple) -> None:
    result, content, path = quick_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert content["format"] == "footfall-perf-e2e"
    assert path.with_suffix(".md").read_text().startswith("## Footfall e2e")
    assert "| max |" in result.stdout


@pytest.mark.timeout(180)
def test_every_figure_is_present(quick_run: tuple) -> None:
    _, content, _ = quick_run
    phases = content["summary"]["phases"]
    assert {"max", "rate50", "per_report"} <= set(phases)
    for name, figures in phases.items():
        for key in PHASE_FIGURES:
            assert figures.get(key) is not None, f"{name}: {key} missing"
            assert figures[key] >= 0
        for block in ("cpu_s_per_1k_reports", "peak_rss_mb"):
            for role in ROLES:
                assert figures[block].get(role) is not None, f"{name}: {block}.{role} missing"
        assert figures["reports_acked"] > 0, f"{name}: nothing acknowledged"
    assert phases["rate50"]["offered_requests_per_s"] > 0
    refs = content["summary"]["references"]
    assert refs["kafka_produce"]["records_per_s"] > 0
    assert refs["kafka_consume"]["records_per_s"] > 0
    ratios = content["summary"]["ratios"]
    for name in ("pipeline_vs_kafka_produce", "sink_vs_kafka_consume", "batched_vs_per_report"):
        assert ratios[name] is not None, name
    if importlib.util.find_spec("perf.references.bare_sanic") is not None:
        assert refs["bare_sanic"]["requests_per_s"] > 0
        assert ratios["gateway_vs_bare_sanic"] is not None


@pytest.mark.timeout(180)
def test_verification_found_no_loss(quick_run: tuple) -> None:
    _, content, _ = quick_run
    checks = content["verification"]
    assert {c["phase"] for c in checks} == set(content["summary"]["phases"])
    for check in checks:
        assert (check["lost"], check["duplicated"], check["unexpected"]) == (0, 0, 0), check
        assert check["acknowledged"] > 0
    assert content["ok"] is True
