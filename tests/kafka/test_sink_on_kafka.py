"""Scenario h and item 4 on Apache Kafka: does an offset gap ever appear, and is the sink's lag right?

The sink's offset-gap refetch exists because the embedded broker (Tansu) sometimes skips
offsets in a fetch and returns them later. This runs the sink under bench load on real
Kafka and counts the gaps it met (``footfall_sink_offset_gaps_total`` accepted,
``footfall_sink_offset_gap_refetches_total`` healed by a refetch). ``FOOTFALL_KAFKA_SOAK_S``
sets the load's length (CI: 20 s; the decision in docs/decisions.md rests on longer runs).

Lag: ListOffsets on Kafka is exact, so once everything acknowledged has landed, every
partition's ``footfall_sink_lag_records`` is exported and 0, and ``/readyz`` says
``lag 0 records`` in its detail line.
"""

from __future__ import annotations

import os
import re
import urllib.request

import pytest

from footfall import promtext
from tests.faults.harness import KafkaScenario, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(900)]

SOAK_S = float(os.environ.get("FOOTFALL_KAFKA_SOAK_S") or 20)
_LAG_RE = re.compile(r"^footfall_sink_lag_records\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)


def _lags(text: str) -> dict[str, float]:
    return {m["labels"]: float(m["value"]) for m in _LAG_RE.finditer(text)}


def test_h_no_offset_gap_on_apache_kafka_and_lag_drains_to_zero(kafka_faults: KafkaScenario) -> None:
    stack = kafka_faults.stack()
    run = kafka_faults.bench(stack, duration=SOAK_S, rate=80, clients=16)
    run.wait()
    kafka_faults.settle_and_verify(stack, run).assert_exact(f"{SOAK_S:g}s of load on Apache Kafka")
    metrics = stack.metrics("sink")
    gaps = promtext.total(metrics, "footfall_sink_offset_gaps_total")
    refetches = promtext.total(metrics, "footfall_sink_offset_gap_refetches_total")
    landed = stack.landed()
    print(f"FIGURES h: {SOAK_S:g}s load, {landed:.0f} landed, gaps accepted {gaps:.0f}, refetched {refetches:.0f}")
    assert gaps == 0 and refetches == 0, "Apache Kafka never skips an offset of a non-transactional, uncompacted topic"

    # Lag per partition: every partition of both topics exported, all drained to 0.
    wait_for(lambda: sum(_lags(stack.metrics("sink")).values()) == 0, 30, "the sink's lag to drain to 0")
    lags = _lags(stack.metrics("sink"))
    for topic in (stack.config.visit_topic, stack.config.activity_topic):
        exported = sorted(k for k in lags if f'topic="{topic}"' in k)
        assert len(exported) == stack.config.partitions, f"lag of {topic}: {exported}"
    with urllib.request.urlopen(f"{stack.sink_url}/readyz", timeout=5) as response:
        body = response.read().decode()
    assert body.splitlines()[1:2] == ["lag 0 records"], f"/readyz detail: {body!r}"
