"""The gateway's cheaper response header encoding sends exactly the bytes Sanic's own would."""

from __future__ import annotations

import pytest
from sanic.headers import format_http1_response
from sanic.response import HTTPResponse

from gateway.app import _json


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, {"X-Request-ID": "0a1b2c3d-1f"}),
        (503, {"X-Request-ID": "abc", "Retry-After": "1", "Access-Control-Allow-Origin": "https://a.example"}),
        (200, {"X-Request-ID": "evil\r\nSet-Cookie: x=1"}),  # CR/LF: Sanic's sanitising path
        (200, {"X-Request-ID": "nul\x00byte", "Vary": "Origin"}),
        (200, {"X-Request-ID": "tab\tinside"}),
        (200, {"X-Caf\u00e9": "ok"}),  # not ASCII: both raise alike below
        (204, {}),
        (200, {"X-Request-ID": "surrogate\udcff"}),
    ],
)
def test_header_bytes_match_sanic(status: int, headers: dict[str, str]) -> None:
    def encoded(response: HTTPResponse) -> bytes | type[Exception]:
        response.headers["content-length"] = 15
        response.headers["connection"] = "keep-alive"
        try:
            return format_http1_response(status, response.processed_headers)
        except UnicodeEncodeError as exc:
            return type(exc)

    ours = _json(b'{"accepted":12}', status, dict(headers))
    sanic = HTTPResponse(b'{"accepted":12}', status=status, headers=dict(headers), content_type="application/json")
    assert encoded(ours) == encoded(sanic)
    if "\r" in str(headers) or "\x00" in str(headers):
        assert b"\r\nSet-Cookie" not in encoded(ours)  # type: ignore[operator]


def test_decoded_reports_are_not_gc_tracked() -> None:
    """footfall.reports Structs are gc=False (scalars and a UUID only: no cycles possible)."""
    import gc
    import gzip

    from footfall.reports import ReportType, decode_reports
    from tests.gateway.conftest import original_body

    for kind in ("visit", "activity"):
        body, _ = original_body(kind)
        reports = decode_reports(ReportType(kind), gzip.decompress(body))
        assert reports
        assert not any(gc.is_tracked(r) for r in reports)
