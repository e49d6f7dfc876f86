"""``footfall kafka``: run Apache Kafka (one node or a KRaft cluster) in the foreground until Ctrl+C.

Prints the bootstrap list on its first line of stdout (``127.0.0.1:P1,127.0.0.1:P2,...``),
then one line per node with its id, address, pid and log.

Exit codes: 0 after Ctrl+C/SIGTERM stopped it; 1 the cluster did not start (no Java or
Maven, jars not resolvable, ``--data-dir`` in use by another launcher or formatted for another
``--nodes``) or a node died while running, said in one line; 2 bad flags.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec

from footfall.logs import configure_logging
from footfall.settings import LogLevel
from stack.command import command, run_in_foreground
from stack.kafka import KafkaCluster

__all__ = ["KafkaSettings", "main"]


class KafkaSettings(msgspec.Struct, frozen=True, kw_only=True):
    nodes: Annotated[int, msgspec.Meta(ge=1, le=9, description="how many nodes (broker+controller each)")] = 1
    data_dir: Annotated[
        str,
        msgspec.Meta(
            description="durable log dirs, kept across runs, which reuse the last run's ports when free "
            "(empty: a temporary dir, removed on exit)"
        ),
    ] = ""
    heap: Annotated[str, msgspec.Meta(pattern=r"^\d+[kmg]$", description="JVM heap per node, e.g. 512m")] = "512m"
    log_level: Annotated[LogLevel, msgspec.Meta(description="log level (JSON lines on stderr)")] = "info"


def run(settings: KafkaSettings) -> int:
    configure_logging(settings.log_level, "kafka")
    data_dir = Path(settings.data_dir) if settings.data_dir else None
    with KafkaCluster(settings.nodes, data_dir, settings.heap) as cluster:
        print(cluster.bootstrap, flush=True)
        for node_id in cluster.node_ids:
            print(
                f"node {node_id}: 127.0.0.1:{cluster.port(node_id)} pid {cluster.pid(node_id)}"
                f" log {cluster.server_log(node_id)}",
                flush=True,
            )
        print(f"kafka: {len(cluster.node_ids)} node(s) ready; Ctrl+C stops them", file=sys.stderr)

        def death() -> str | None:
            dead = [n for n in cluster.node_ids if not cluster.is_running(n)]
            return f"kafka node {dead[0]} exited; log: {cluster.server_log(dead[0])}" if dead else None

        code = run_in_foreground(death)
    if code == 0:
        kept = f"its data stays in {data_dir}" if data_dir is not None else "its temporary data is removed"
        print(f"kafka: stopped; {kept}", file=sys.stderr)
    return code


main = command(
    KafkaSettings,
    run,
    prog="footfall kafka",
    description=(
        "Run Apache Kafka (KRaft, each node broker and controller) on free loopback ports until Ctrl+C. "
        "Needs Java 17+ and Maven (the jars come from Maven Central, cached in ~/.m2)."
    ),
    env_prefix="FOOTFALL_KAFKA_",
)
