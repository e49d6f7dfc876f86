"""deploy/prometheus.yml and deploy/alerts.yml: valid, tested, and about series that exist.

1. ``promtool check config``, ``promtool check rules`` and ``promtool test rules`` pass (CI
   installs Debian's prometheus package, which ships promtool);
2. every alert has unit tests in deploy/alerts_test.yml with a case that fires it and one
   where it stays quiet;
3. every ``footfall_*`` series an alert reads is one a role really exports (a renamed metric
   would otherwise leave an alert that can never fire);
4. the compose ``prometheus`` service mounts both files and every role has a scrape job.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "alerts_test.yml"
#: where each role registers its metrics
METRIC_SOURCES = [ROOT / "gateway" / "metrics.py", ROOT / "sink" / "instruments.py", ROOT / "dashboard" / "app.py"]
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in _load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule}


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian package prometheus; CI installs it)")
    return binary


@pytest.mark.parametrize(
    "args",
    [["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)], ["test", "rules", str(ALERTS_TEST)]],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    result = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = _alerts()
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in _load(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alerts) - fires == set(), "alerts with no test that fires them"
    assert set(alerts) - quiet == set(), "alerts with no test where they stay quiet"
    assert (fires | quiet) - set(alerts) == set(), "tests for alerts that do not exist"


def _exported() -> set[str]:
    names: set[str] = set()
    for path in METRIC_SOURCES:
        text = path.read_text()
        names |= set(re.findall(r'"(footfall_[a-z0-9_]+)"', text))
        # gateway/metrics.py builds names from a prefix: _PREFIX + "requests_total"
        prefix = re.search(r'_PREFIX: Final = "(footfall_[a-z0-9_]+)"', text)
        if prefix:
            names |= {prefix[1] + suffix for suffix in re.findall(r'_PREFIX \+ "([a-z0-9_]+)"', text)}
    return names


def test_alerts_read_series_the_roles_export() -> None:
    exported = _exported()
    assert "footfall_gateway_ready" in exported and "footfall_sink_records_written_total" in exported, exported
    for name, rule in _alerts().items():
        used = set(re.findall(r"\b(footfall_[a-z0-9_]+)", rule["expr"]))
        assert used or "up{" in rule["expr"], f"{name}: reads no footfall series"
        for series in used:
            base = next((series.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if series.endswith(s)), series)
            assert series in exported or base in exported, f"{name}: {series} is exported by no role"


def test_compose_runs_prometheus_with_these_files() -> None:
    compose = _load(ROOT / "docker-compose.yml")
    service = compose["services"]["prometheus"]
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in service["volumes"]}
    assert mounts["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/alerts.yml"] == "/etc/prometheus/alerts.yml"  # rule_files: [alerts.yml], beside it
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    assert _load(PROMETHEUS)["rule_files"] == ["alerts.yml"]


def test_every_role_with_metrics_is_scraped_on_its_port() -> None:
    compose = _load(ROOT / "docker-compose.yml")
    jobs = {job["job_name"]: job for job in _load(PROMETHEUS)["scrape_configs"]}
    for role, port_flag in {"gateway": "--port", "sink": "--metrics-port", "dashboard": "--port"}.items():
        command = [str(a) for a in compose["services"][role]["command"]]
        port = int(command[command.index(port_flag) + 1])
        job = jobs[role]
        replicas = compose["services"][role].get("deploy", {}).get("replicas", 1)
        if replicas > 1:  # one target per replica, through Docker's DNS
            assert job["dns_sd_configs"] == [{"names": [role], "type": "A", "port": port, "refresh_interval": "15s"}]
        else:
            assert job["static_configs"] == [{"targets": [f"{role}:{port}"]}]
