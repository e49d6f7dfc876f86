"""Fuzzing the running gateway over real sockets (Hypothesis): no input earns a 5xx or kills a worker.

Requests are built byte by byte (method, path, headers, body, framing), mixing valid
reports, mutated reports, random JSON, random bytes and broken gzip, and sent to
``python -m gateway`` on loopback. Every request must get a 4xx/2xx answer (or, for bytes
that are not HTTP at all, a closed connection), the worker processes must be the same
ones afterwards, and memory must stay bounded.

``FOOTFALL_FUZZ_SEED=N`` replays a run (the seed is printed); ``FOOTFALL_FUZZ_EXAMPLES``
changes the number of requests (default 300).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import uuid
import zlib

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.security.conftest import Target, raw_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FUZZ_SEED = int(os.environ.get("FOOTFALL_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**31))
EXAMPLES = int(os.environ.get("FOOTFALL_FUZZ_EXAMPLES", "300"))

_PATHS = [
    "/api/visit/v1", "/api/visit/v1/", "/api/activity/v1", "/api/activity/v1/", "/api/visit/v2",
    "/api/visit/v1/../../etc/passwd", "/api/%2e%2e/visit/v1", "/api/visit/v1?x=1&x=2", "/healthz", "/readyz",
    "/metrics", "/openapi.json", "/", "//api//visit//v1", "/api/visit/v1%00", "/api/v%ff", "*",
]  # fmt: skip
_METHODS = ["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "CONNECT", "TRACE", "FOO"]
_CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/json;;;", "\x7f",
]  # fmt: skip
_ENCODINGS = ["gzip", "deflate", "identity", "", "br", "zstd", "gzip, gzip", "x-gzip", "GZIP", "compress", "*"]


def _visit(rng: random.Random) -> dict[str, object]:
    enter = rng.randrange(0, 2**41)
    return {
        "dataVer": 1,
        "userId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "algorithmType": rng.randrange(1, 8),
        "enterTime": enter,
        "exitTime": enter + 2_400_000,
        "poiId": rng.getrandbits(63),
        "latitude": rng.uniform(-90, 90),
        "longitude": rng.uniform(-180, 180),
    }


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)),
    max_leaves=30,
)
_field_values = st.one_of(
    _json_scalars,
    st.just(-1),
    st.just(2**63),
    st.just(253_402_300_800_000),
    st.just("00000000-0000-0000-0000-000000000000"),
    st.just(1e308),
    st.just(-91.0),
    st.lists(st.integers(), max_size=3),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "json", "bytes", "deep", "huge-number", "unicode"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind in {"valid", "mutated"}:
        reports = [_visit(rng) for _ in range(draw(st.integers(0, 13)))]
        if kind == "mutated" and reports:
            victim = reports[draw(st.integers(0, len(reports) - 1))]
            field = draw(st.sampled_from([*victim, "extra", ""]))
            if draw(st.booleans()):
                victim.pop(field, None)
            else:
                victim[field] = draw(_field_values)
        return json.dumps(reports).encode()
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    if kind == "huge-number":
        return b'[{"dataVer":' + b"9" * draw(st.integers(20, 20_000)) + b"}]"
    if kind == "unicode":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=2000))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(_METHODS))
    path = draw(
        st.one_of(
            st.sampled_from(_PATHS),
            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60).map(lambda p: "/" + p),
            st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60),
        )
    )
    body = draw(bodies())
    encoding = draw(st.sampled_from(_ENCODINGS))
    if encoding in {"gzip", "x-gzip", "GZIP"} and draw(st.booleans()):
        body = gzip.compress(body)
        if draw(st.booleans()):  # truncated or corrupted stream
            cut = draw(st.integers(0, len(body)))
            body = body[:cut] + draw(st.binary(max_size=8))
    elif encoding == "deflate" and draw(st.booleans()):
        body = zlib.compress(body)
    headers = ["Host: 127.0.0.1"]
    content_type = draw(st.sampled_from(_CONTENT_TYPES))
    if content_type:
        headers.append(f"Content-Type: {content_type}")
    if encoding:
        headers.append(f"Content-Encoding: {encoding}")
    framing = draw(st.sampled_from(["length", "length", "length", "chunked", "short", "none"]))
    if framing == "length":
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "short":  # fewer bytes declared than sent: the rest is a (garbage) pipelined request
        headers.append(f"Content-Length: {draw(st.integers(0, len(body)))}")
    elif framing == "chunked":
        headers.append("Transfer-Encoding: chunked")
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
    for _ in range(draw(st.integers(0, 4))):
        name = draw(
            st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=20)
        )
        value = draw(st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60))
        headers.append(f"{name}: {value}")
    if draw(st.integers(0, 9)) == 0:
        headers.append(draw(st.sampled_from(["Connection: close", "Expect: 100-continue", "Content-Length: -1"])))
    head = f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    return head.encode("latin-1", "replace") + body


def test_fuzzed_requests_never_get_a_server_error(gateway: Target) -> None:
    print(f"fuzz seed: {FUZZ_SEED} (replay with FOOTFALL_FUZZ_SEED={FUZZ_SEED}), {EXAMPLES} requests")
    pids_before = gateway.pids()
    rss_before = gateway.rss()
    statuses: dict[int | None, int] = {}

    @seed(FUZZ_SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        print_blob=True,
    )
    @given(data=requests())
    def attack(data: bytes) -> None:
        try:
            response = raw_request(gateway.port, data, timeout=15)
        except TimeoutError:
            raise AssertionError(f"no answer within 15 s to {data[:300]!r}") from None
        status = None if response is None else response.status
        statuses[status] = statuses.get(status, 0) + 1
        if response is not None:
            assert response.status < 500, (response.status, response.body[:500], data[:300])

    attack()
    print(f"statuses: {dict(sorted(statuses.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))}")
    assert gateway.pids() == pids_before, "a gateway worker died (or was replaced) during the fuzz run"
    growth = gateway.rss() - rss_before
    print(f"gateway RSS {rss_before / 2**20:.1f} MiB -> {gateway.rss() / 2**20:.1f} MiB")
    assert growth < 64 * 2**20, f"gateway memory grew by {growth / 2**20:.1f} MiB during the fuzz run"
    assert raw_request(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status == 200  # type: ignore[union-attr]
