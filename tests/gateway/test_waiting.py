"""A request waits on its own future, forwarded from the batch's: cancelling it leaves the batch alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sanic.compat import Header

from footfall.reports import ReportType
from gateway.app import _ingest
from gateway.errors import ProduceTimeoutError
from gateway.producer import Delivery, Headers, Record
from tests.gateway.conftest import JSON_GZIP, original_body


def _request(app: Any) -> Any:
    body, _ = original_body()
    return SimpleNamespace(app=app, body=body, method="POST", path="/api/visit/v1", headers=Header(JSON_GZIP))


async def _shared_batch(fake_app: Any) -> tuple[Any, Delivery]:
    app, producer = fake_app()
    batch: Delivery = asyncio.get_running_loop().create_future()

    async def submit(topic: str, records: Sequence[Record], headers: Headers, timestamp_ms: int) -> list[Delivery]:
        return [batch]

    producer.submit = submit
    app.ctx.producer = producer
    return app, batch


async def test_cancelled_request_leaves_the_shared_batch_and_the_others(fake_app: Any) -> None:
    app, batch = await _shared_batch(fake_app)
    gone = asyncio.ensure_future(_ingest(_request(app), ReportType.VISIT, "/api/visit/v1"))
    stays = asyncio.ensure_future(_ingest(_request(app), ReportType.VISIT, "/api/visit/v1"))
    await asyncio.sleep(0)
    gone.cancel()  # the client went away
    await asyncio.sleep(0)
    assert gone.cancelled()
    assert not batch.cancelled()
    batch.set_result(None)  # the broker acknowledged the batch
    response = await stays
    assert response.status == 200
    assert response.body == b'{"accepted":12}'


async def test_every_waiter_gets_the_batch_error(fake_app: Any) -> None:
    app, batch = await _shared_batch(fake_app)
    waiting = [asyncio.ensure_future(_ingest(_request(app), ReportType.VISIT, "/api/visit/v1")) for _ in range(3)]
    await asyncio.sleep(0)
    batch.set_result(ProduceTimeoutError("no ack"))
    responses = await asyncio.gather(*waiting)
    assert [r.status for r in responses] == [503, 503, 503]
    assert all(r.headers["retry-after"] for r in responses)
