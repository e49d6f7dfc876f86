"""``footfall rehearse``: the compose deployment as real processes, and what it proves.

Fast checks (no process started): every compose service has a rehearsal counterpart; the
command lines are the compose file's, only addresses changed; the generated HAProxy and
Prometheus configs differ from deploy/ only where addresses do, and are valid.

Scenarios (``slow``; one rehearsal on three Apache Kafka nodes for the module), each under a
bench load through HAProxy and each ending in ``bench verify`` ok (lost=0 duplicated=0):

1. a gateway replica killed -9 and restarted: HAProxy takes it out within its check
   interval, clients see errors only for requests in flight on it, Prometheus' FootfallRoleDown
   goes pending;
2. a sink instance killed -9 and another one added;
3. a Kafka node killed -9 and brought back;
4. a rolling restart of the gateways (drain in HAProxy, SIGTERM, start, back in): zero non-2xx.

And the command itself: ``footfall rehearse`` prints where everything is, Ctrl+C drains and
stops everything (no process left), and it ends with the verify line and exit code 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from footfall import promtext
from footfall.errors import ConfigError
from stack.compose import (
    Service,
    haproxy_loopback,
    kafka_properties,
    load_deployment,
    localize,
    prometheus_loopback,
)
from stack.measure import ResourceSampler, histogram_quantiles
from stack.rehearsal import Rehearsal
from stack.topology import COUNTERPARTS, RehearsalConfig

ROOT = Path(__file__).resolve().parents[2]
_Test = TypeVar("_Test", bound=Callable[..., None])
BENCH_CLIENTS = 30
#: deploy/haproxy.cfg: `check inter 2s fall 2` -> a dead gateway is out after 2 failed checks
CHECK_INTERVAL_S = 2.0
CHECK_FALL = 2


# -- 1. the rehearsal is the compose file ------------------------------------------------------


def test_every_compose_service_has_a_rehearsal_counterpart() -> None:
    deployment = load_deployment(ROOT, environ={})
    services = set(deployment.services) | {re.sub(r"-\d+$", "-*", name) for name in deployment.kafka}
    assert services == set(COUNTERPARTS), (
        f"compose services without a rehearsal counterpart: {sorted(services - set(COUNTERPARTS))}; "
        f"counterparts of services that no longer exist: {sorted(set(COUNTERPARTS) - services)}"
    )


def test_command_lines_are_the_compose_files_with_only_addresses_changed() -> None:
    deployment = load_deployment(ROOT, environ={})
    hostnames = [*deployment.services, *deployment.kafka]
    values = {"gateway": {"--brokers": "127.0.0.1:1", "--host": "127.0.0.1", "--port": "2"}}
    for role, replaced in values.items():
        service = deployment.by_role(role)
        local = localize(service, replaced, hostnames=hostnames)
        original = service.command[1:]
        assert len(local) == len(original)
        changed = {original[i - 1] for i, (a, b) in enumerate(zip(original, local, strict=True)) if a != b}
        assert changed == set(replaced), f"{role}: changed {changed}"


def test_a_compose_value_the_rehearsal_cannot_localize_is_an_error() -> None:
    service = Service(
        name="sink",
        image="footfall",
        command=["sink", "--brokers", "kafka-1:9092", "--dlq-brokers", "kafka-2:9092", "--record-directory", "/data/r"],
        environment={},
        volumes={"/data/r": "records"},
    )
    with pytest.raises(ConfigError, match="kafka-2:9092"):
        localize(service, {"--brokers": "127.0.0.1:1", "--record-directory": "/tmp/r"}, hostnames=["kafka-2"])
    with pytest.raises(ConfigError, match="/data/r"):
        localize(service, {"--brokers": "127.0.0.1:1", "--dlq-brokers": "x:1"}, hostnames=["kafka-2"])
    with pytest.raises(ConfigError, match="--metrics-port"):
        localize(service, {"--metrics-port": "1"}, hostnames=[])


def _config_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0].rstrip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def test_haproxy_loopback_changes_only_addresses(tmp_path: Path) -> None:
    original = (ROOT / "deploy" / "haproxy.cfg").read_text()
    text = haproxy_loopback(
        original, ingest_port=18080, admin_port=18404, gateways=[18001, 18002, 18003], socket=tmp_path / "s"
    )
    removed = set(_config_lines(original)) - set(_config_lines(text))
    added = set(_config_lines(text)) - set(_config_lines(original))
    assert all(line.startswith(("resolvers", "    ")) for line in removed)
    assert {line.split()[0] for line in removed} <= {
        "resolvers",
        "nameserver",
        "resolve_retries",
        "timeout",
        "hold",
    } | {
        "accepted_payload_size",
        "bind",
        "server-template",
        "default-server",
    }, removed
    assert added == {
        f"    stats socket {tmp_path / 's'} mode 600 level admin",
        "    bind 127.0.0.1:18080",
        "    bind 127.0.0.1:18404",
        "    default-server check inter 2s fall 2 rise 2",
        "    server gateway-1 127.0.0.1:18001",
        "    server gateway-2 127.0.0.1:18002",
        "    server gateway-3 127.0.0.1:18003",
    }
    assert f"inter {CHECK_INTERVAL_S:g}s fall {CHECK_FALL}" in text
    lowered = haproxy_loopback(
        original, ingest_port=1, admin_port=2, gateways=[3], socket=tmp_path / "s", max_connections=9000
    )
    assert "    maxconn 9000" in lowered.splitlines()
    binary = shutil.which("haproxy")
    if binary is not None:
        (tmp_path / "haproxy.cfg").write_text(text)
        check = subprocess.run([binary, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_loopback_replaces_targets_of_every_job(tmp_path: Path) -> None:
    original = (ROOT / "deploy" / "prometheus.yml").read_text()
    targets = {"gateway": ["127.0.0.1:1", "127.0.0.1:2"], "sink": ["127.0.0.1:3"], "dashboard": ["127.0.0.1:4"]}
    alerts = ROOT / "deploy" / "alerts.yml"
    text = prometheus_loopback(original, targets=targets, rule_files=[alerts], interval="1s")
    assert "dns_sd_configs" not in text and "127.0.0.1:2" in text and "evaluation_interval: 1s" in text
    with pytest.raises(ConfigError, match="jobs"):
        prometheus_loopback(original, targets={"gateway": []}, rule_files=[alerts])
    promtool = shutil.which("promtool")
    if promtool is not None:
        (tmp_path / "p.yml").write_text(text)
        check = subprocess.run([promtool, "check", "config", str(tmp_path / "p.yml")], capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_kafka_nodes_get_the_compose_files_cluster_settings() -> None:
    properties = kafka_properties(load_deployment(ROOT, environ={}))
    assert properties["min.insync.replicas"] == "2"
    assert properties["default.replication.factor"] == "3"
    assert properties["unclean.leader.election.enable"] == "false"
    assert properties["auto.create.topics.enable"] == "false"
    assert not {k for k in properties if "listener" in k or k in {"node.id", "log.dirs"}}, properties


def test_histogram_quantiles_sum_every_label_set() -> None:
    text = "\n".join(
        [
            'footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="0.5"} 40',
            'footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="1"} 50',
            'footfall_sink_e2e_latency_seconds_bucket{topic="visit",le="+Inf"} 50',
            'footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="0.5"} 10',
            'footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="1"} 40',
            'footfall_sink_e2e_latency_seconds_bucket{topic="activity",le="+Inf"} 50',
            'footfall_sink_e2e_latency_seconds_count{topic="visit"} 50',
        ]
    )
    # 100 samples: 50 at <= 0.5 s, 90 at <= 1 s, 100 in all
    assert histogram_quantiles(text, "footfall_sink_e2e_latency_seconds", (0.5, 0.9, 0.99)) == {
        "p50": 0.5,
        "p90": 1.0,
        "p99": float("inf"),
        "count": 100.0,
    }


def test_resource_sampler_counts_a_process_group_from_its_start() -> None:
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"],
        start_new_session=True,
    )
    sampler = ResourceSampler(lambda: {"busy": [busy.pid]}, interval=0.05).start()
    busy.wait(30)
    figures = sampler.stop()["busy"]
    assert 0.3 <= figures["cpu_s"] <= 1.0, figures  # its 0.6 s, less what ran before the first sample
    assert figures["peak_rss_mb"] > 1, figures


# -- 2. scenarios on the running deployment -----------------------------------------------------


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    run = tmp_path_factory.mktemp("rehearsal")
    # The compose file's 3 s initial rebalance delay only slows the sinks' first assignment here.
    config = RehearsalConfig(run_directory=run, scrape_interval="1s", group_initial_rebalance_delay_ms=0)
    r = Rehearsal(config)
    try:
        r.start(timeout=240)
    except BaseException:
        for path in sorted((run / "logs").glob("*.log")):
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}")
        raise
    yield r
    codes = r.stop()
    assert all(code == 0 for code in codes.values()), codes


class _Load:
    """A bench run through HAProxy for the length of a scenario."""

    def __init__(self, r: Rehearsal, name: str, seconds: float = 10.0) -> None:
        self.r = r
        self.json = r.run_directory / f"{name}.json"
        self.proc = r.start_bench(
            self.json,
            {"--duration": str(seconds), "--concurrent-clients": str(BENCH_CLIENTS), "--quiet": None},
        )
        started = r.accepted()
        _until(lambda: r.accepted() > started + 100, 30, "the bench got nothing acknowledged")

    def finish(self) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """Wait for the bench; (exit code, its run summary, bench verify's result once landed)."""
        code = self.proc.wait(60)
        self.r.processes.pop("bench", None)
        run = json.loads(self.json.read_text())
        result = self.r.wait_verified(self.json, timeout=60)
        return code, run, result


def _scenario(timeout: float = 300) -> Callable[[_Test], _Test]:
    """The marks of a test on a running deployment: slow, integration, its own timeout."""

    def mark(test: _Test) -> _Test:
        marked: _Test = pytest.mark.slow(pytest.mark.integration(pytest.mark.timeout(timeout)(test)))
        return marked

    return mark


def _until(condition: Any, timeout: float, message: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{message} (within {timeout:g}s)")


def _assert_verified(result: dict[str, Any], run: dict[str, Any]) -> None:
    assert result["acknowledged"] == run["counts"]["reports_acked"] > 0
    assert (result["lost"], result["duplicated"], result["unexpected"]) == (0, 0, 0), result
    assert result["ok"] is True, result


@_scenario(timeout=420)
def test_prometheus_sees_every_process(rehearsal: Rehearsal) -> None:
    r = rehearsal

    def all_up() -> bool:
        results = r.prometheus_api("/api/v1/query", query="up")["result"]
        jobs = [item["metric"]["job"] for item in results if item["value"][1] == "1"]
        return sorted(jobs) == ["dashboard", "gateway", "gateway", "gateway", "sink", "sink"]

    _until(all_up, 30, "prometheus: not every gateway, sink and dashboard is up")
    rules = r.prometheus_api("/api/v1/rules")["groups"][0]["rules"]
    assert len(rules) == 10 and all(rule["health"] == "ok" for rule in rules), rules
    # A healthy deployment raises nothing that says a process is gone or unready.
    _until(lambda: all(rule["lastEvaluation"] != "0001-01-01T00:00:00Z" for rule in _rules(r)), 30, "rules not run")
    quiet = {"FootfallRoleDown", "FootfallGatewayNotReady", "FootfallSinkWriteErrors", "FootfallDLQRecords"}
    active = {a["labels"]["alertname"] for a in r.prometheus_api("/api/v1/alerts")["alerts"]}
    assert not active & quiet, active
    for series in ("footfall_gateway_ready", "footfall_sink_workers_alive", "footfall_dashboard_data_age_seconds"):
        _until(lambda s=series: r.prometheus_api("/api/v1/query", query=s)["result"], 30, f"no {series}")


@_scenario()
def test_gateway_killed_and_restarted_behind_haproxy(rehearsal: Rehearsal) -> None:
    r = rehearsal
    load = _Load(r, "gateway-kill")
    victim = "gateway-2"
    instance = f"127.0.0.1:{r.processes[victim].port}"
    r.kill(victim)
    out_after = _until(lambda: r.backend_servers()[victim]["status"].startswith("DOWN"), 20, "HAProxy kept it")
    # Two failed checks 2 s apart, plus the check that was under way and a loaded machine's slack.
    assert out_after <= CHECK_INTERVAL_S * (CHECK_FALL + 1) + 3, f"HAProxy took {out_after:.1f}s"
    print(f"HAProxy marked {victim} DOWN {out_after:.1f}s after kill -9")

    def role_down() -> bool:
        alerts = r.prometheus_api("/api/v1/alerts")["alerts"]
        return any(
            a["labels"]["alertname"] == "FootfallRoleDown"
            and a["labels"]["instance"] == instance
            and a["state"] in {"pending", "firing"}
            for a in alerts
        )

    _until(role_down, 30, "FootfallRoleDown did not go pending for the killed gateway")
    r.restart(victim)
    r.wait_backend_up(victim)
    _code, run, result = load.finish()
    print(f"gateway kill: {run['counts']['failed']} of {run['counts']['requests']} requests failed {run['errors']}")
    # Only requests in flight on the killed replica may fail (at most one per client);
    # connection attempts to it are retried on another one by HAProxy (retries 2, redispatch).
    assert run["counts"]["failed"] <= BENCH_CLIENTS, run["errors"]
    _assert_verified(result, run)


@_scenario()
def test_sink_killed_and_another_added(rehearsal: Rehearsal) -> None:
    r = rehearsal
    load = _Load(r, "sink-kill")
    r.kill("sink-1")
    r.processes.pop("sink-1")
    added = r.add_sink()

    def holds_partitions() -> bool:
        return r.metric("sink", "footfall_sink_assigned_partitions") > 0 and all(
            _metric(r, name, "footfall_sink_assigned_partitions") > 0 for name in r.names("sink")
        )

    _until(holds_partitions, 60, f"{added} never got partitions")
    _code, run, result = load.finish()
    # The sink is behind Kafka: clients lose no connection over it (a 503 from a slow broker may still happen).
    assert run["errors"]["by_kind"] == {}, run["errors"]
    _assert_verified(result, run)


@_scenario()
def test_kafka_node_killed_and_brought_back(rehearsal: Rehearsal) -> None:
    r = rehearsal
    assert r.brokers is not None
    load = _Load(r, "kafka-kill", seconds=90)  # ended below, once the node is back
    r.brokers.kill(2)
    before = r.accepted()
    # RF 3, min.insync.replicas 2: with one node gone, acks=all writes still succeed.
    _until(lambda: r.accepted() > before + 200, 60, "nothing acknowledged with one Kafka node down")
    r.brokers.start_node(2)
    after = r.accepted()
    _until(lambda: r.accepted() > after + 200, 60, "nothing acknowledged after the node came back")
    load.proc.send_signal(signal.SIGINT)
    _code, run, result = load.finish()
    _assert_verified(result, run)


@_scenario()
def test_rolling_gateway_restart_has_no_errors(rehearsal: Rehearsal) -> None:
    r = rehearsal
    load = _Load(r, "rolling", seconds=60)
    pids = {name: r.processes[name].popen.pid for name in r.names("gateway")}  # type: ignore[union-attr]
    r.rolling_restart()
    assert all(r.processes[name].popen.pid != pid for name, pid in pids.items())  # type: ignore[union-attr]
    load.proc.send_signal(signal.SIGINT)  # the restart is done: end the load now
    code, run, result = load.finish()
    assert run["counts"]["failed"] == 0 and run["errors"]["by_status"] == {}, run["errors"]
    assert code == 0
    _assert_verified(result, run)


def _rules(r: Rehearsal) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = r.prometheus_api("/api/v1/rules")["groups"][0]["rules"]
    return rules


def _metric(r: Rehearsal, name: str, metric: str) -> float:
    return promtext.total(promtext.fetch(f"{r.url(name)}/metrics"), metric)


# -- 3. the command ----------------------------------------------------------------------------


def _ours(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions ``marker`` (our run directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@_scenario()
def test_rehearse_command_prints_everything_and_ctrl_c_drains(tmp_path: Path) -> None:
    records = tmp_path / "records"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "stack.cli", "rehearse", "--record-directory", str(records)),
            *("--kafka", "embedded", "--concurrent-clients", "10", "--no-prometheus"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl+C"):
                break
        text = "".join(lines)
        for name in ("kafka", "gateway-lb", "gateway-1", "gateway-3", "sink-2", "dashboard", "records", "logs"):
            assert re.search(rf"^  {name} ", text, flags=re.MULTILINE), text
        metrics = re.search(r"^  gateway-1 +(\S+)", text, flags=re.MULTILINE)[1]  # type: ignore[index]
        _until(
            lambda: promtext.total(promtext.fetch(metrics), "footfall_gateway_reports_accepted_total") > 0,
            60,
            "no load",
        )
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text += rest
    assert proc.returncode == 0, text
    verify = [line for line in text.splitlines() if line.startswith("verify: ")]
    assert len(verify) == 1 and verify[0].startswith("verify: lost=0 duplicated=0 unexpected=0"), text
    assert int(re.search(r"acknowledged=(\d+)", verify[0])[1]) > 0  # type: ignore[index]
    assert "\r" not in text, "no carriage returns when stdout is not a terminal"
    assert _ours(str(tmp_path)) == [], "processes left behind"
