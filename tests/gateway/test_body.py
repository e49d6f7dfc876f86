"""Body limits and decoding, without HTTP: gzip bombs, truncation, multi-member gzip, errors."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import msgspec
import pytest

from footfall.reports import ReportType
from gateway.body import BodyLimits, check_content_type, decode_body, decompress, parse_content_encoding
from gateway.errors import BadRequestError, PayloadTooLargeError, ReportValidationError, UnsupportedMediaError
from tests.gateway.conftest import original_body

LIMITS = BodyLimits(max_body_bytes=2 * 1024 * 1024, max_decompressed_bytes=4 * 1024 * 1024, max_expansion_ratio=200)


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzip'd at level 9, built in 1 MiB steps (never holding ``size`` bytes)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(compressor.flush())
    return b"".join(parts)


def test_gzip_bomb_is_refused_fast_and_small() -> None:
    bomb = gzip_bomb(1024**3)  # 1 GiB of zeros, ~1 MiB compressed
    assert len(bomb) < LIMITS.max_body_bytes
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match="expands past"):
        decompress(bomb, "gzip", LIMITS)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * LIMITS.max_decompressed_bytes, peak
    assert elapsed < 0.5, elapsed


def test_expansion_ratio_limits_small_bodies() -> None:
    limits = BodyLimits(max_body_bytes=1 << 20, max_decompressed_bytes=1 << 30, max_expansion_ratio=10)
    data = gzip_bomb(8 * 1024 * 1024)  # ~8 KiB compressed: ratio ~1000
    with pytest.raises(PayloadTooLargeError):
        decompress(data, "gzip", limits)
    # Under the 64 KiB floor the ratio does not apply: ordinary JSON compresses 10-50x.
    assert decompress(gzip.compress(b" " * 60_000), "gzip", limits) == b" " * 60_000


def test_compressed_size_limit() -> None:
    with pytest.raises(PayloadTooLargeError, match="as sent"):
        decompress(b"x" * (LIMITS.max_body_bytes + 1), "gzip", LIMITS)
    with pytest.raises(PayloadTooLargeError):
        decompress(
            b"x" * (LIMITS.max_decompressed_bytes + 1),
            "identity",
            BodyLimits(
                max_body_bytes=1 << 30, max_decompressed_bytes=LIMITS.max_decompressed_bytes, max_expansion_ratio=1
            ),
        )


@pytest.mark.parametrize("cut", [1, 5, 8, 20])
def test_truncated_gzip_is_400(cut: int) -> None:
    body, _ = original_body()
    with pytest.raises(BadRequestError):
        decompress(body[:-cut], "gzip", LIMITS)


def test_gzip_members_and_trailing_garbage() -> None:
    assert decompress(gzip.compress(b"[1,") + gzip.compress(b"2]"), "gzip", LIMITS) == b"[1,2]"
    with pytest.raises(BadRequestError):
        decompress(gzip.compress(b"[1]") + b"\x00\x01junk", "gzip", LIMITS)
    assert decompress(gzip.compress(b""), "gzip", LIMITS) == b""


def test_deflate_zlib_and_raw() -> None:
    assert decompress(zlib.compress(b"[1]"), "deflate", LIMITS) == b"[1]"
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert decompress(raw.compress(b"[1]") + raw.flush(), "deflate", LIMITS) == b"[1]"
    with pytest.raises(BadRequestError):
        decompress(b"not deflate", "deflate", LIMITS)


def test_content_headers() -> None:
    for ok in ("application/json", "Application/JSON; charset=utf-8"):
        check_content_type(ok)
    for bad in (None, "", "text/json", "application/x-www-form-urlencoded", "multipart/form-data"):
        with pytest.raises(UnsupportedMediaError):
            check_content_type(bad)
    assert parse_content_encoding(None) == "identity"
    assert parse_content_encoding("GZIP") == "gzip"
    assert parse_content_encoding("x-gzip") == "gzip"
    assert parse_content_encoding("deflate") == "deflate"
    for bad in ("br", "gzip, identity", "compress", "zstd"):
        with pytest.raises(UnsupportedMediaError):
            parse_content_encoding(bad)


def test_decode_is_all_or_nothing_and_lists_errors() -> None:
    _, reports = original_body()
    items = [msgspec.to_builtins(r) for r in reports]
    assert len(decode_body(ReportType.VISIT, msgspec.json.encode(items), 5)) == 12
    items[0]["userId"] = "not-a-uuid"
    items[7]["latitude"] = "north"
    with pytest.raises(ReportValidationError) as info:
        decode_body(ReportType.VISIT, msgspec.json.encode(items), 5)
    assert [(e.index, e.field) for e in info.value.errors] == [(0, "userId"), (7, "latitude")]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'[{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}]",
        b"[1e999999]",
        b"[Infinity]",
    ],
)
def test_hostile_json_is_a_client_error(body: bytes) -> None:
    with pytest.raises((BadRequestError, ReportValidationError)):
        decode_body(ReportType.VISIT, body, 5)
