"""The compose deployment read as data, and turned into loopback equivalents for a rehearsal.

``footfall rehearse`` runs what docker-compose.yml, kafka/docker-compose.yml,
deploy/haproxy.cfg and deploy/prometheus.yml describe, as local processes. Nothing is copied
by hand: each command line, environment and replica count comes from the compose file, and
only addresses change (container hostnames and ports become loopback ports, volume paths
become directories). Whatever the rewriting does not know (a new flag naming a container
host or a volume path) is an error, so the rehearsal cannot silently drift from the files.

1. :func:`load_deployment` parses both compose files into :class:`Service` entries;
2. :func:`localize` rewrites one footfall command line for loopback;
3. :func:`haproxy_loopback` and :func:`prometheus_loopback` rewrite the balancer's and
   Prometheus' configs the same way;
4. :func:`kafka_properties` turns the Kafka nodes' ``KAFKA_*`` environment into broker
   properties (the KRaft settings every node shares).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from footfall.errors import ConfigError

__all__ = [
    "ROOT",
    "Deployment",
    "Service",
    "haproxy_loopback",
    "kafka_properties",
    "load_deployment",
    "localize",
    "prometheus_loopback",
]

ROOT: Final = Path(__file__).resolve().parents[1]
_VARIABLE: Final = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")
#: Kafka env vars that are per node or per container, not cluster settings.
_KAFKA_NODE_ENV: Final = frozenset(
    {
        "CLUSTER_ID",
        "KAFKA_NODE_ID",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_LOG_DIRS",
        "KAFKA_HEAP_OPTS",
        "KAFKA_PROCESS_ROLES",
    }
)


@dataclass(frozen=True, kw_only=True)
class Service:
    """One compose service, as far as a rehearsal needs it."""

    name: str
    image: str
    command: list[str]
    environment: dict[str, str]
    replicas: int = 1
    volumes: dict[str, str] = field(default_factory=dict)  # mount target -> volume or host path
    profiles: list[str] = field(default_factory=list)

    @property
    def role(self) -> str | None:
        """The footfall role this service runs (``gateway``, ``sink``, ...), or None."""
        first = self.command[0] if self.command else ""
        return first if first in {"gateway", "sink", "dashboard", "bench"} else None


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """Both compose files: the application's services and the Kafka nodes."""

    services: dict[str, Service]
    kafka: dict[str, Service]

    def by_role(self, role: str) -> Service:
        found = [s for s in self.services.values() if s.role == role]
        if len(found) != 1:
            raise ConfigError(f"docker-compose.yml: expected one {role} service, found {len(found)}")
        return found[0]

    def by_image(self, word: str) -> Service:
        found = [s for s in self.services.values() if word in s.image]
        if len(found) != 1:
            raise ConfigError(f"docker-compose.yml: expected one {word} service, found {len(found)}")
        return found[0]


def _interpolate(value: str, environ: Mapping[str, str]) -> str:
    """``${NAME:-default}`` as compose reads it (an empty or unset NAME takes the default)."""
    return _VARIABLE.sub(lambda m: environ.get(m["name"]) or (m["default"] or ""), value)


def _service(name: str, raw: dict[str, Any], environ: Mapping[str, str]) -> Service:
    command = raw.get("command", [])
    if isinstance(command, str):
        command = command.split()
    env = raw.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    volumes = {}
    for spec in raw.get("volumes", []):
        source, _, rest = str(spec).partition(":")
        volumes[rest.partition(":")[0]] = source
    return Service(
        name=name,
        image=_interpolate(str(raw.get("image", "")), environ),
        command=[_interpolate(str(a), environ) for a in command],
        environment={k: _interpolate(str(v), environ) for k, v in env.items()},
        replicas=int(raw.get("deploy", {}).get("replicas", 1)),
        volumes=volumes,
        profiles=list(raw.get("profiles", [])),
    )


def load_deployment(root: Path = ROOT, environ: Mapping[str, str] | None = None) -> Deployment:
    """Parse docker-compose.yml and kafka/docker-compose.yml under ``root``."""
    env = os.environ if environ is None else environ

    def services(path: Path) -> dict[str, Service]:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the compose file ({exc})") from exc
        return {name: _service(name, raw, env) for name, raw in data["services"].items()}

    return Deployment(
        services=services(root / "docker-compose.yml"), kafka=services(root / "kafka" / "docker-compose.yml")
    )


def localize(
    service: Service,
    values: Mapping[str, str],
    *,
    hostnames: Sequence[str],
    drop: Sequence[str] = (),
) -> list[str]:
    """``service``'s command line (after the role) with each ``--flag`` in ``values`` replaced.

    Flags in ``drop`` are removed with their value. Raises ConfigError when a flag of
    ``values`` is not on the command line, or a remaining value still names a container
    (one of ``hostnames``, ``0.0.0.0``) or a volume path: the compose file changed in a
    way the rehearsal does not know yet.
    """
    args = service.command[1:]
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in drop:
            i += 2
            continue
        out.append(flag)
        if flag in values and i + 1 < len(args):
            out.append(values[flag])
            seen.add(flag)
            i += 2
            continue
        i += 1
    missing = set(values) - seen
    if missing:
        raise ConfigError(f"docker-compose.yml service {service.name!r}: no {sorted(missing)} on its command line")
    for value in out:
        if "0.0.0.0" in value or any(  # noqa: S104 - looking for it, not binding it
            mount != "" and value.startswith(mount) for mount in service.volumes
        ):
            raise ConfigError(f"service {service.name!r}: rehearse does not know how to localize {value!r}")
        if any(re.search(rf"(^|//|,){re.escape(host)}(:|/|$)", value) for host in hostnames):
            raise ConfigError(f"service {service.name!r}: rehearse does not know how to localize {value!r}")
    return out


def haproxy_loopback(
    text: str,
    *,
    ingest_port: int,
    admin_port: int,
    gateways: Sequence[int],
    socket: Path,
    max_connections: int | None = None,
) -> str:
    """deploy/haproxy.cfg with loopback addresses instead of Docker's.

    Changes, and nothing else: the ``resolvers docker`` section goes; each ``bind :P`` binds
    127.0.0.1 (ingest and admin ports chosen by the caller); ``server-template`` becomes one
    ``server`` line per gateway port; the ``resolvers``/``init-addr`` server options go (no
    DNS on loopback); a runtime-API socket is added to ``global`` so the rehearsal can take
    one gateway out of rotation (``set server ... state drain``) before restarting it. With
    ``max_connections``, a global ``maxconn`` above it is lowered to it (HAProxy needs two
    file descriptors per connection and refuses to start past the process's hard limit).
    """
    out: list[str] = []
    section = ""
    skipping = False
    binds = {"frontend ingest": ingest_port, "frontend admin": admin_port}
    replaced = {"binds": 0, "template": 0}
    for raw in text.splitlines():
        line = raw.rstrip()
        if line and not line[0].isspace() and not line.startswith("#"):
            section = line.split("#", 1)[0].strip()
            skipping = section.startswith("resolvers ")
            if skipping:
                while out and out[-1].startswith("#"):  # the section's own comment goes with it
                    out.pop()
                continue
            out.append(line)
            if section == "global":
                out.append(f"    stats socket {socket} mode 600 level admin")
            continue
        if skipping:
            continue
        words = line.split("#", 1)[0].split()
        if section == "global" and words[:1] == ["maxconn"] and max_connections is not None:
            out.append(f"    maxconn {min(int(words[1]), max_connections)}")
        elif words[:1] == ["bind"]:
            if section not in binds:
                raise ConfigError(f"deploy/haproxy.cfg: rehearse knows no port for {section!r}")
            out.append(f"    bind 127.0.0.1:{binds[section]}")
            replaced["binds"] += 1
        elif words[:1] == ["server-template"]:
            prefix = words[1]
            out += [f"    server {prefix}{n} 127.0.0.1:{port}" for n, port in enumerate(gateways, 1)]
            replaced["template"] += 1
        elif words[:1] == ["default-server"]:
            kept: list[str] = []
            skip = 0
            for word in words[1:]:
                if skip:
                    skip -= 1
                elif word in {"resolvers", "init-addr"}:
                    skip = 1
                else:
                    kept.append(word)
            out.append("    default-server " + " ".join(kept))
        else:
            out.append(line)
    if replaced != {"binds": len(binds), "template": 1}:
        raise ConfigError(f"deploy/haproxy.cfg: expected 2 binds and one server-template, rewrote {replaced}")
    return "\n".join(out) + "\n"


def prometheus_loopback(
    text: str,
    *,
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path],
    interval: str | None = None,
) -> str:
    """deploy/prometheus.yml with each job's targets replaced by loopback ``host:port`` ones.

    Every job of the file must get targets (a job the rehearsal does not run is an error) and
    every entry of ``targets`` must be a job of the file. ``interval`` (e.g. ``"1s"``) shortens
    scrape and evaluation intervals so a short rehearsal sees alerts go pending.
    """
    config = yaml.safe_load(text)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    if jobs != set(targets):
        raise ConfigError(f"deploy/prometheus.yml jobs {sorted(jobs)} differ from the rehearsal's {sorted(targets)}")
    for job in config["scrape_configs"]:
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": list(targets[job["job_name"]])}]
    config["rule_files"] = [str(p) for p in rule_files]
    if interval is not None:
        config["global"].update(scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval)
    return str(yaml.safe_dump(config, sort_keys=False))


def kafka_properties(deployment: Deployment) -> dict[str, str]:
    """The cluster settings every Kafka node shares, as ``server.properties`` keys.

    ``KAFKA_MIN_INSYNC_REPLICAS: 2`` becomes ``min.insync.replicas=2``. Per-node and
    per-container settings (ids, listeners, log dirs, heap) are the launcher's job.
    """
    shared: dict[str, str] | None = None
    for node in deployment.kafka.values():
        env = {k: v for k, v in node.environment.items() if k.startswith("KAFKA_") and k not in _KAFKA_NODE_ENV}
        shared = env if shared is None else {k: v for k, v in shared.items() if env.get(k) == v}
    return {k.removeprefix("KAFKA_").lower().replace("_", "."): v for k, v in (shared or {}).items()}
