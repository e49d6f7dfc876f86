"""Raw Kafka requests the launcher asks a node: Metadata (who is in the cluster) and InitProducerId.

Hand-built requests over a plain socket, so starting Kafka needs no Kafka client and no
event loop: :meth:`stack.kafka.KafkaCluster.start` polls both until every node is in.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = ["ClusterMetadata", "grants_producer_id", "kafka_metadata"]


@dataclass(frozen=True)
class ClusterMetadata:
    """What one node said in a Metadata response: the live brokers and the controller."""

    brokers: dict[int, int]  # node id -> port
    controller_id: int


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> ClusterMetadata | None:
    """Send a Metadata v1 request (no topics) to ``host:port``; None if it does not answer.

    A raw request, so the launcher needs no Kafka client and no event loop.
    """
    correlation_id = 0x0F0F
    client_id = b"footfall-launcher"
    # header: api_key 3 (Metadata), version 1, correlation id, client id; body: topics = [] (none)
    body = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size_bytes = _recv_exactly(sock, 4)
            if size_bytes is None:
                return None
            payload = _recv_exactly(sock, struct.unpack(">i", size_bytes)[0])
    except OSError:
        return None
    if payload is None:
        return None
    return _parse_metadata_v1(payload, correlation_id)


def grants_producer_id(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if ``host:port`` grants a producer id (InitProducerId v0, no transactional id).

    A freshly started cluster answers COORDINATOR_LOAD_IN_PROGRESS for a moment after its
    metadata is complete; an idempotent producer cannot start until this succeeds.
    """
    correlation_id = 0x0F10
    client_id = b"footfall-launcher"
    # header: api_key 22 (InitProducerId), version 0; body: transactional_id null, timeout 60 s
    body = struct.pack(">hhih", 22, 0, correlation_id, len(client_id)) + client_id + struct.pack(">hi", -1, 60_000)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            payload = _recv_exactly(sock, 4 + 4 + 4 + 2)  # size, correlation id, throttle, error
    except OSError:
        return False
    if payload is None:
        return False
    _size, got_id, _throttle, error_code = struct.unpack(">iiih", payload)
    return bool(got_id == correlation_id and error_code == 0)


def _parse_metadata_v1(payload: bytes, correlation_id: int) -> ClusterMetadata | None:
    try:
        got_id, count = struct.unpack_from(">ii", payload, 0)
        if got_id != correlation_id:
            return None
        pos = 8
        brokers: dict[int, int] = {}
        for _ in range(count):
            (node_id,) = struct.unpack_from(">i", payload, pos)
            (host_len,) = struct.unpack_from(">h", payload, pos + 4)
            pos += 6 + host_len
            (port,) = struct.unpack_from(">i", payload, pos)
            (rack_len,) = struct.unpack_from(">h", payload, pos + 4)
            pos += 6 + max(rack_len, 0)
            brokers[node_id] = port
        (controller_id,) = struct.unpack_from(">i", payload, pos)
    except struct.error:
        return None
    return ClusterMetadata(brokers=brokers, controller_id=controller_id)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
