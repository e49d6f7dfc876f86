"""Scenarios b-f on the three-node Apache Kafka cluster (``--broker kafka3``), under bench load.

Each checks ``bench verify`` (lost=0 duplicated=0 unexpected=0) and the gateway's answers:
only 200 or 503 while the cluster is degraded, never a request left hanging past
``--produce-timeout-ms`` (the bench's own timeout is just above it, so a hang would show
as a ``timeout`` error). The figures (election time seen by clients, 503 counts, recovery
times) are printed for docs/operations.md; on a shared 2-core machine they are noisy.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from typing import Any

import pytest

from stack.processes import Stack
from tests.faults.harness import PROBE_USER, KafkaScenario, count_lines_containing, post_probe, role_rss, wait_for
from tests.kafka.support import busiest_leader, coordinator, leaders

pytestmark = [pytest.mark.integration, pytest.mark.kafka3, pytest.mark.slow, pytest.mark.timeout(300)]

PRODUCE_TIMEOUT_MS = 3000
#: just above the gateway's deadline: a request answered later than this counts as a hang
BENCH_TIMEOUT_S = PRODUCE_TIMEOUT_MS / 1000 + 2.5


def _stack(kafka_faults: KafkaScenario) -> Stack:
    return kafka_faults.stack(gateway_args=("--produce-timeout-ms", str(PRODUCE_TIMEOUT_MS)))


def _answers(summary: dict[str, Any]) -> tuple[int, int]:
    """(200s, 503s) of a bench run; fails on any other answer, a timeout or a connection error."""
    errors = summary["errors"]
    assert set(errors["by_status"]) <= {"503"}, f"answers other than 200/503: {errors}"
    assert not set(errors["by_kind"]) - {"cancelled"}, f"requests without an answer: {errors}"
    return summary["counts"]["ok"], int(errors["by_status"].get("503", 0))


def _topics(stack: Stack) -> list[str]:
    return [stack.config.visit_topic, stack.config.activity_topic]


def test_b_kill_9_of_the_leader_under_load(kafka_faults: KafkaScenario) -> None:
    cluster = kafka_faults.cluster
    stack = _stack(kafka_faults)
    run = kafka_faults.bench(stack, duration=16, rate=40, clients=16, timeout=BENCH_TIMEOUT_S)
    wait_for(lambda: stack.accepted() >= 100, 20, "the load to flow")
    victim = busiest_leader(cluster.bootstrap, _topics(stack))
    killed = time.monotonic()
    cluster.kill(victim)
    kafka_faults.log(f"kill -9 node {victim} (leading the most partitions)")
    wait_for(
        lambda: all(victim not in leaders(cluster.bootstrap, t).values() for t in _topics(stack)),
        30,
        f"every partition led by a node other than {victim}",
        interval=0.2,
    )
    election_s = time.monotonic() - killed
    summary = run.wait()
    ok, unavailable = _answers(summary)
    kafka_faults.settle_and_verify(stack, run).assert_exact(f"kill -9 of leader node {victim}")
    restarted = time.monotonic()
    cluster.start_node(victim)
    print(
        f"FIGURES b: election {election_s:.1f}s after kill -9 (new leaders in metadata); "
        f"{ok} x 200, {unavailable} x 503; max latency {summary['latency_ms']['max']:.0f} ms; "
        f"node {victim} rejoined in {time.monotonic() - restarted:.1f}s"
    )


def test_d_rolling_restart_under_load(kafka_faults: KafkaScenario) -> None:
    cluster = kafka_faults.cluster
    stack = _stack(kafka_faults)
    # The load lasts exactly as long as the rolling: stopped with SIGINT (the bench then writes its run file).
    run = kafka_faults.bench(stack, duration=300, rate=30, clients=12, timeout=BENCH_TIMEOUT_S)
    wait_for(lambda: stack.accepted() >= 50, 20, "the load to flow")
    per_node: list[str] = []
    for node_id in cluster.node_ids:
        started = time.monotonic()
        cluster.stop_node(node_id)  # SIGTERM: a controlled shutdown moves its leaderships first
        stopped = time.monotonic()
        cluster.start_node(node_id)
        per_node.append(f"node {node_id} stop {stopped - started:.1f}s rejoin {time.monotonic() - stopped:.1f}s")
        kafka_faults.log(f"rolled {per_node[-1]}")
    run.proc.send_signal(signal.SIGINT)
    summary = run.wait()
    ok, unavailable = _answers(summary)
    kafka_faults.settle_and_verify(stack, run).assert_exact("rolling restart")
    print(f"FIGURES d: rolling restart {'; '.join(per_node)}; {ok} x 200, {unavailable} x 503")


def test_e_whole_cluster_restart_on_durable_logs(kafka_faults: KafkaScenario) -> None:
    cluster = kafka_faults.cluster
    stack = _stack(kafka_faults)
    before = kafka_faults.bench(stack, duration=4, rate=40, clients=8, timeout=BENCH_TIMEOUT_S)
    before.wait()
    kafka_faults.settle_and_verify(stack, before).assert_exact("before the restart")
    sink_pid = stack.processes["sink"].pid

    stopped = time.monotonic()
    cluster.stop()  # every node at once, SIGTERM; the log dirs stay
    kafka_faults.log(f"whole cluster stopped in {time.monotonic() - stopped:.1f}s; sink {sink_pid} running")
    down = time.monotonic()
    assert stack.processes["sink"].poll() is None, "the sink must outlive the cluster"
    cluster.start()
    back = time.monotonic()
    kafka_faults.log(f"whole cluster back in {back - down:.1f}s after the stop")

    after = kafka_faults.bench(stack, duration=4, rate=40, clients=8, timeout=BENCH_TIMEOUT_S)
    after.wait()
    # The sink kept running on its checkpoints: what landed before is not landed again,
    # what came after is all there.
    kafka_faults.settle_and_verify(stack, after, timeout=120).assert_exact("after the restart")
    kafka_faults.settle_and_verify(stack, before).assert_exact("the first load, after the restart")
    assert stack.processes["sink"].pid == sink_pid and not stack.exited(), stack.exited()
    print(f"FIGURES e: whole-cluster stop+start: back {back - down:.1f}s after stopping; first load landed again 0")


def _ready(stack: Stack, role: str) -> bool:
    try:
        with urllib.request.urlopen(f"{stack.url(role)}/readyz", timeout=2.0) as response:
            return bool(response.status == 200)
    except OSError:  # HTTPError (503) included
        return False


def test_c_two_of_three_nodes_down(kafka_faults: KafkaScenario) -> None:
    """Without two in-sync replicas nothing can be acknowledged (acks=all, min.insync.replicas 2):
    the gateway answers 503 and says so in /readyz, its memory stays bounded, and it
    recovers by itself when the nodes return."""
    cluster = kafka_faults.cluster
    stack = _stack(kafka_faults)
    run = kafka_faults.bench(stack, duration=45, rate=40, clients=16, timeout=BENCH_TIMEOUT_S)
    wait_for(lambda: stack.accepted() >= 100, 20, "the load to flow")
    rss_before = role_rss(stack, "gateway")
    down = cluster.node_ids[:2]
    for node_id in down:
        cluster.kill(node_id)
    lost_at = time.monotonic()
    kafka_faults.log(f"kill -9 nodes {down}")
    wait_for(lambda: not _ready(stack, "gateway"), 30, "the gateway's /readyz to turn false", interval=0.2)
    unready_s = time.monotonic() - lost_at
    accepted_down = stack.accepted()
    # NotEnoughReplicas is a 503 that tells the client when to come back, within the produce deadline.
    probed = time.monotonic()
    status, headers = post_probe(stack.gateway_url, timeout=BENCH_TIMEOUT_S)
    probe_s = time.monotonic() - probed
    kafka_faults.log(f"probe POST with one node of three: {status} after {probe_s:.1f}s, headers {headers}")
    assert status == 503, f"expected 503 without two in-sync replicas, got {status}"
    assert int(headers.get("Retry-After", "0")) >= 1, f"503 without a Retry-After: {headers}"
    rss_peak = rss_before
    outage_until = time.monotonic() + 12
    while time.monotonic() < outage_until:  # the outage lasts a fixed 12 s: sample memory meanwhile
        rss_peak = max(rss_peak, role_rss(stack, "gateway"))
        time.sleep(0.5)
    acked_while_down = stack.accepted() - accepted_down
    restart_at = time.monotonic()
    cluster.start()  # both at once: starts the nodes not running, waits for all
    back_at = time.monotonic()
    wait_for(lambda: _ready(stack, "gateway"), 60, "the gateway's /readyz to turn true again", interval=0.2)
    recovered_s = time.monotonic() - back_at
    summary = run.wait()
    ok, unavailable = _answers(summary)
    result = kafka_faults.settle_and_verify(stack, run, timeout=120)
    # The probe was answered 503: it may have landed once the nodes came back, never twice.
    probes = count_lines_containing(stack.config.record_directory, PROBE_USER)
    assert probes <= 1, f"the probe report landed {probes} times"
    result.assert_exact("two of three nodes down", probes)
    mib = 1024 * 1024
    print(
        f"FIGURES c: /readyz false {unready_s:.1f}s after 2 of 3 nodes died; {acked_while_down:.0f} acked while "
        f"down; gateway RSS {rss_before / mib:.0f} -> peak {rss_peak / mib:.0f} MiB; nodes rejoined in "
        f"{back_at - restart_at:.1f}s, /readyz true {recovered_s:.1f}s after; {ok} x 200, {unavailable} x 503"
    )
    assert unavailable > 0, "requests during the outage were answered 503"
    # The gateway acknowledges only what two replicas have: with one node left, nothing.
    assert acked_while_down <= 16, f"{acked_while_down} requests acknowledged with one node of three"
    assert rss_peak - rss_before < 200 * mib, f"gateway memory grew {(rss_peak - rss_before) / mib:.0f} MiB"


def test_f_kill_9_of_the_group_coordinator_during_a_rebalance(kafka_faults: KafkaScenario) -> None:
    cluster = kafka_faults.cluster
    first = _stack(kafka_faults)
    run = kafka_faults.bench(first, duration=20, rate=40, clients=12, timeout=BENCH_TIMEOUT_S)
    wait_for(lambda: first.landed() >= 100, 30, "the first sink to land")
    victim = coordinator(cluster.bootstrap, first.config.group)
    c = first.config
    second = kafka_faults.stack(
        visit_topic=c.visit_topic,
        activity_topic=c.activity_topic,
        group=c.group,
        record_directory=c.record_directory,
        start=False,
        gateway_args=("--produce-timeout-ms", str(PRODUCE_TIMEOUT_MS)),
    )
    # The second sink's JoinGroup starts the rebalance; the coordinator dies while it runs.
    killer = threading.Timer(2.0, cluster.kill, args=(victim,))
    killer.start()
    try:
        second.start(timeout=120)
    finally:
        killer.join()
    kafka_faults.log(f"kill -9 of coordinator node {victim} while a second sink joined group {c.group}")
    summary = run.wait()
    ok, unavailable = _answers(summary)
    kafka_faults.settle_and_verify(first, run, timeout=120).assert_exact("coordinator killed during a rebalance")
    print(f"FIGURES f: coordinator node {victim} killed mid-rebalance; {ok} x 200, {unavailable} x 503")
