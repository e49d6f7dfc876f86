"""What Apache Kafka answers a starting sink that the embedded broker never does.

- A ``--session-timeout`` outside the brokers' ``group.min.session.timeout.ms`` and
  ``group.max.session.timeout.ms`` (6 s and 30 min by default) is refused with
  INVALID_SESSION_TIMEOUT at every JoinGroup: one clear line and no restart, not a crash loop.
- A node that dies while the sink creates its side topics (the admin client asked it:
  ``NodeNotReadyError``, seen in scenario f of tests/kafka/test_cluster_faults.py) is asked
  again within ``--broker-timeout``, not a failed start-up.

One layer each: aiokafka's consumer, or the topic creation, made to answer as Kafka did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import InvalidSessionTimeoutError  # type: ignore[import-untyped]

import sink.__main__ as sink_main
from footfall.errors import BrokerUnavailableError
from sink.consumer import SinkConsumer
from sink.errors import EXIT_DO_NOT_RESTART, SessionTimeoutRefusedError
from sink.settings import SinkSettings


async def _nothing(*_: Any) -> None: ...


async def test_a_refused_session_timeout_is_one_line_and_not_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = SinkConsumer("127.0.0.1:9", "g", ["visit"], on_revoked=_nothing, on_assigned=_nothing, session_timeout=3)

    async def refused() -> None:
        raise InvalidSessionTimeoutError()

    monkeypatch.setattr(consumer._consumer, "start", refused)
    with pytest.raises(SessionTimeoutRefusedError) as caught:
        await consumer.start()
    message = str(caught.value)
    assert "--session-timeout 3" in message and "group.min.session.timeout.ms" in message
    assert "\n" not in message
    assert caught.value.exit_code == EXIT_DO_NOT_RESTART  # the supervisor stops instead of crash-looping


@pytest.mark.parametrize(("failures", "created"), [(2, True), (100, False)], ids=["node-back", "never"])
async def test_side_topics_are_asked_again_while_a_node_is_away(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failures: int, created: bool
) -> None:
    calls: list[list[str]] = []

    async def ensure_topics(brokers: str, topics: list[str], partitions: int, rf: int) -> None:
        calls.append(list(topics))
        if len(calls) <= failures:
            raise BrokerUnavailableError("cannot create topics: NodeNotReadyError('node id 3')")

    monkeypatch.setattr(sink_main, "wait_for_broker", _nothing)
    monkeypatch.setattr(sink_main, "ensure_topics", ensure_topics)
    settings = SinkSettings(groups=["g:visit"], record_directory=str(tmp_path), broker_timeout=2.0)
    if created:
        await sink_main.prepare_topics(settings)
        assert len(calls) == failures + 1 and calls[-1] == ["visit.retry", "visit.dlq"]
    else:
        with pytest.raises(BrokerUnavailableError):
            await sink_main.prepare_topics(settings)
        assert 1 < len(calls) < 10  # asked again with backoff, then gave up at --broker-timeout
