"""Hypothesis-generated hostile bodies never get a 5xx, and never a 2xx for invalid data.

Runs the real app (over a fake, always-acknowledging producer) through Sanic's ASGI client;
``test_live.py`` sends a sample of the same bodies over real HTTP to the live gateway.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sanic_testing import TestManager

from footfall.reports import ReportType, decode_reports
from tests.gateway.conftest import FakeProducer, make_settings, original_body

LIMITS = {"max_body_bytes": 512 * 1024, "max_decompressed_bytes": 4 * 1024 * 1024}

_valid_visit = msgspec.to_builtins(original_body()[1][0])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
big_ints = st.integers(min_value=2**63 - 2, max_value=2**70) | st.integers(min_value=-(2**70), max_value=-(2**63) - 1)


@st.composite
def mutated_reports(draw: st.DrawFn) -> bytes:
    """A JSON array of visits with one kind of damage (or none)."""
    n = draw(st.integers(min_value=0, max_value=6))
    items: list[Any] = [dict(_valid_visit) for _ in range(n)]
    kind = draw(st.sampled_from(["none", "wrong_type", "big_int", "drop_field", "extra", "unicode", "non_object"]))
    if items and kind != "none":
        i = draw(st.integers(min_value=0, max_value=n - 1))
        field = draw(st.sampled_from(sorted(_valid_visit)))
        if kind == "wrong_type":
            items[i][field] = draw(json_values)
        elif kind == "big_int":
            items[i][field] = draw(big_ints)
        elif kind == "drop_field":
            del items[i][field]
        elif kind == "extra":
            items[i][draw(st.text(max_size=10))] = draw(json_values)
        elif kind == "unicode":
            items[i][field] = draw(st.text(min_size=1, max_size=20))
        else:
            items[i] = draw(json_values)
    return json.dumps(items).encode()


@st.composite
def raw_tricks(draw: st.DrawFn) -> bytes:
    """Hand-written JSON texts msgspec must treat carefully."""
    good = json.dumps(_valid_visit)
    return draw(
        st.sampled_from(
            [
                good.replace('"latitude": ' + json.dumps(_valid_visit["latitude"]), '"latitude": NaN'),
                good.replace('"longitude": ' + json.dumps(_valid_visit["longitude"]), '"longitude": Infinity'),
                "[" + good[:-1] + ', "poiId": "dup"}]',  # duplicate key, the later one invalid
                "[" + good[:-1] + ', "dataVer": 1}]',  # duplicate key, both valid
                "[" + "[" * 5000 + "]" * 5000 + "]",
                "[" + good[:-1] + ', "x": ' + "[" * 3000 + "]" * 3000 + "}]",
                "[]",
                "[" + ",".join(["1"] * 100_000) + "]",
                "[" + ",".join(["{}"] * 100_000) + "]",
                "[" + ",".join([good] * 2000) + "]",
                '["\\ud800"]',
                "[" + good + "]\x00",
                "\ufeff[" + good + "]",
            ]
        )
    ).encode()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """(body bytes, Content-Encoding)."""
    plain = draw(mutated_reports() | raw_tricks() | st.binary(max_size=300))
    encoding = draw(st.sampled_from(["identity", "gzip", "gzip", "deflate"]))
    if encoding == "gzip":
        data = gzip.compress(plain)
        cut = draw(st.integers(min_value=0, max_value=12))
        return (data[:-cut] if cut else data), encoding
    if encoding == "deflate":
        return zlib.compress(plain), encoding
    return plain, encoding


def _expected_valid(data: bytes, encoding: str) -> int | None:
    """The oracle: number of reports if the body is valid, else None (independent of gateway.body)."""
    try:
        if encoding == "gzip":
            data = gzip.decompress(data)
        elif encoding == "deflate":
            data = zlib.decompress(data)
        reports = decode_reports(ReportType.VISIT, data)
    except (OSError, EOFError, zlib.error, msgspec.DecodeError, RecursionError):
        return None
    return len(reports) or None


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def app() -> Any:
    from gateway.app import create_app

    producer = FakeProducer()
    app = create_app(make_settings(**LIMITS), producer_factory=lambda s, m: producer, name="gw_hostile")
    TestManager(app)
    return app


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=bodies())
@example(case=(b"[]", "identity"))
@example(case=(gzip.compress(b"\x00" * 10_000_000), "gzip"))
def test_hostile_bodies(loop: asyncio.AbstractEventLoop, app: Any, case: tuple[bytes, str]) -> None:
    data, encoding = case
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    _, response = loop.run_until_complete(app.asgi_client.post("/api/visit/v1", content=data, headers=headers))
    assert response.status < 500, response.text
    expected = _expected_valid(data, encoding)
    if 200 <= response.status < 300:
        assert expected is not None, (data[:200], response.text)
        assert response.json == {"accepted": expected}
    else:
        assert response.status in {400, 413, 415, 422}, response.text
        assert response.json["message"]
        if response.status in {400, 422}:
            assert expected is None, (data[:200], response.text)


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(case=bodies())
def test_hostile_bodies_over_http(live_gateway: Any, case: tuple[bytes, str]) -> None:
    """The same bodies over real HTTP to the live gateway (real broker): same verdicts."""
    import httpx

    data, encoding = case
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    response = httpx.post(live_gateway.url + "/api/visit/v1", content=data, headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    expected = _expected_valid(data, encoding)
    if 200 <= response.status_code < 300:
        assert expected is not None and response.json() == {"accepted": expected}
    else:
        assert response.status_code in {400, 413, 415, 422}, response.text
        if response.status_code in {400, 422}:
            assert expected is None
