"""API correctness: every endpoint's numbers equal plain-Python aggregates over the same files."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from dashboard.store import RollupStore
from tests.dashboard.fixtures import MINUTE, expected

DAY = 86_400_000
T0 = 1_514_764_800_000  # 2018-01-01T00:00:00Z, the fixture's first day

RANGES = [
    pytest.param(None, None, id="all"),
    pytest.param(T0, T0 + DAY, id="first-day"),
    pytest.param(T0 + 5 * 3_600_000, T0 + 9 * 3_600_000, id="four-hours-minute-buckets"),
    pytest.param(T0 + 12 * MINUTE, T0 + 30 * 3_600_000 + 59 * MINUTE, id="off-the-hour"),
    pytest.param(T0 + DAY, None, id="open-ended"),
]


async def get(api: Any, path: str, **params: Any) -> dict[str, Any]:
    _, resp = await api.get(path, params={k: v for k, v in params.items() if v is not None})
    assert resp.status == 200, resp.text
    body: dict[str, Any] = resp.json
    return body


def bounds(records: Path, lo: int | None, hi: int | None, summary: dict[str, Any]) -> tuple[int, int]:
    return (summary["firstMs"] if lo is None else lo, summary["lastMs"] if hi is None else hi)


@pytest.mark.parametrize(("lo", "hi"), RANGES)
@pytest.mark.parametrize("report_type", ["all", "visit", "activity"])
async def test_every_endpoint_matches_plain_python(
    api: Any, records: Path, lo: int | None, hi: int | None, report_type: str
) -> None:
    summary = (await get(api, "/api/v1/summary"))["data"]
    a, b = bounds(records, lo, hi, summary)
    types = ("visit", "activity") if report_type == "all" else (report_type,)
    exp = expected(records, a, b, types)
    q = {"from": lo, "to": hi}

    ts = await get(api, "/api/v1/timeseries", **q, type=report_type)
    assert (ts["from"], ts["to"]) == (a, b)
    assert ts["data"] == [p for p in exp["timeseries"] if p["visit"] or p["activity"]]
    assert (await get(api, "/api/v1/activity-types", **q))["data"] == exp["activity-types"]
    assert (await get(api, "/api/v1/algorithm-types", **q))["data"] == exp["algorithm-types"]
    durations = (await get(api, "/api/v1/visit-durations", **q))["data"]
    assert [d["count"] for d in durations] == exp["visit-durations"]
    assert (await get(api, "/api/v1/unique-users", **q, type=report_type))["data"] == exp["unique-users"]

    for cell in (1, 5):
        geo = (await get(api, "/api/v1/geo", **q, cell=cell))["data"]
        want: dict[tuple[int, int], int] = {}
        for (lon, lat), n in exp["geo"].items():
            key = (lon // cell * cell, lat // cell * cell)
            want[key] = want.get(key, 0) + n
        assert {(x, y): n for x, y, n in geo} == want

    for by, counts in (("visits", exp["poi-visits"]), ("users", exp["poi-users"])):
        top = (await get(api, "/api/v1/top-pois", **q, by=by, limit=7))["data"]
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:7]
        assert [(int(t["poiId"]), t[by]) for t in top] == ranked
        for t in top:
            assert t["visits"] == exp["poi-visits"][int(t["poiId"])]
            assert t["users"] == exp["poi-users"][int(t["poiId"])]


async def test_summary_and_bucket_choice(api: Any, records: Path) -> None:
    body = await get(api, "/api/v1/summary")
    exp = expected(records, 0, 2**50)
    assert body["data"]["reports"] == {"visit": exp["visits"], "activity": exp["activities"]}
    assert body["data"]["badLines"] == 0
    assert isinstance(body["asOf"], int)
    assert (await get(api, "/api/v1/timeseries", **{"from": T0, "to": T0 + 3_600_000}))["bucket"] == "minute"
    assert (await get(api, "/api/v1/timeseries", **{"from": T0, "to": T0 + 3 * DAY}))["bucket"] == "hour"
    assert (await get(api, "/api/v1/timeseries", **{"from": T0, "to": T0 + 30 * DAY}))["bucket"] == "day"
    day = await get(api, "/api/v1/timeseries", bucket="day")
    assert [p["t"] % DAY for p in day["data"]] == [0] * len(day["data"])
    assert sum(p["visit"] + p["activity"] for p in day["data"]) == exp["visits"] + exp["activities"]


async def test_iso_times_equal_epoch_ms(api: Any) -> None:
    iso = await get(
        api, "/api/v1/activity-types", **{"from": "2018-01-01T06:00:00Z", "to": "2018-01-02T00:00:00+00:00"}
    )
    ms = await get(api, "/api/v1/activity-types", **{"from": T0 + 6 * 3_600_000, "to": T0 + DAY})
    assert iso["data"] == ms["data"] and iso["from"] == ms["from"]


async def test_empty_directory(tmp_path: Path) -> None:
    store = RollupStore(tmp_path, None, {"visit": "visit", "activity": "activity"})
    with store:
        store.refresh()
        app = create_app(
            DashboardSettings(record_directory=str(tmp_path)), store=store, refresher=False, name="dash-empty"
        )
        api = app.asgi_client
        assert (await get(api, "/api/v1/summary"))["data"]["reports"] == {"visit": 0, "activity": 0}
        for endpoint in ("timeseries", "activity-types", "algorithm-types", "top-pois", "geo", "unique-users"):
            assert (await get(api, f"/api/v1/{endpoint}"))["data"] == []
        durations = await get(api, "/api/v1/visit-durations", **{"from": 0, "to": MINUTE})
        assert all(d["count"] == 0 for d in durations["data"])


async def test_probes_metrics_page_and_static(api: Any) -> None:
    _, resp = await api.get("/healthz")
    assert resp.status == 200
    _, resp = await api.get("/readyz")
    assert resp.status == 200 and resp.json["status"] == "ready"
    await get(api, "/api/v1/geo")
    _, resp = await api.get("/metrics")
    assert resp.status == 200
    assert 'footfall_dashboard_requests_total{route="geo",status="200"} 1' in resp.text
    assert "footfall_dashboard_query_seconds_bucket" in resp.text
    _, resp = await api.get("/")
    assert resp.status == 200 and "<title>Footfall dashboard</title>" in resp.text
    assert "default-src 'self'" in resp.headers["content-security-policy"]
    for asset in (
        "/static/dashboard.js",
        "/static/dashboard.css",
        "/static/vendor/echarts/echarts.min.js",
        "/static/vendor/topojson-client/topojson-client.min.js",
        "/static/vendor/world-atlas/land-110m.json",
    ):
        _, resp = await api.get(asset)
        assert resp.status == 200, asset
    _, resp = await api.get("/static/../settings.py")
    assert resp.status in {400, 404}


async def test_basic_auth(store: RollupStore) -> None:
    settings = DashboardSettings(record_directory=str(store.record_directory), auth="ann:s3cret:with-colon")
    api = create_app(settings, store=store, refresher=False, name="dash-auth").asgi_client
    _, resp = await api.get("/api/v1/summary")
    assert resp.status == 401 and "Basic" in resp.headers["www-authenticate"]
    _, resp = await api.get("/", headers={"Authorization": "Basic " + base64.b64encode(b"ann:wrong").decode()})
    assert resp.status == 401
    _, resp = await api.get("/", headers={"Authorization": "Basic !!notbase64"})
    assert resp.status == 401
    good = "Basic " + base64.b64encode(b"ann:s3cret:with-colon").decode()
    _, resp = await api.get("/api/v1/summary", headers={"Authorization": good})
    assert resp.status == 200
    _, resp = await api.get("/healthz")  # probes stay open for orchestrators
    assert resp.status == 200


BAD = [
    ("/api/v1/timeseries", {"from": "yesterday"}, "from: expected epoch milliseconds or an ISO-8601 time"),
    ("/api/v1/timeseries", {"from": "120000", "to": "60000"}, "from (120000) must be earlier than to (60000)"),
    ("/api/v1/timeseries", {"to": "99999999999999999"}, "to: 99999999999999999 is outside"),
    ("/api/v1/timeseries", {"type": "visits"}, "type: expected one of all, visit, activity, got 'visits'"),
    ("/api/v1/timeseries", {"bucket": "week"}, "bucket: expected one of auto, minute, hour, day"),
    ("/api/v1/timeseries", {"bucket": "minute", "from": "0", "to": str(T0)}, "use a larger bucket"),
    ("/api/v1/top-pois", {"limit": "0"}, "limit: expected an integer from 1 to 100, got '0'"),
    ("/api/v1/top-pois", {"limit": "10; DROP TABLE files"}, "limit: expected an integer from 1 to 100"),
    ("/api/v1/top-pois", {"by": "visits DESC; DROP TABLE r_poi; --"}, "by: expected one of visits, users"),
    ("/api/v1/geo", {"cell": "3"}, "cell: expected one of 1, 2, 5, 10, got '3'"),
    ("/api/v1/geo", {"limit": "3"}, "unknown parameter 'limit': expected cell, counting, from, to"),
    ("/api/v1/summary", {"from": "1"}, "unknown parameter 'from'"),
    ("/api/v1/activity-types", {"from": "1' OR '1'='1"}, "from: expected epoch milliseconds"),
    ("/api/v1/unique-users", {"type": "visit' UNION SELECT 1 --"}, "type: expected one of"),
    ("/api/v1/timeseries", {"from": "²"}, "from: expected epoch milliseconds"),  # "²".isdigit() is True
    ("/api/v1/top-pois", {"limit": "١٢"}, "limit: expected an integer from 1 to 100"),  # non-ASCII digits
    ("/api/v1/geo", {"to": "9" * 400}, "to: expected epoch milliseconds"),
]


@pytest.mark.parametrize(("path", "params", "message"), BAD)
async def test_bad_parameters_are_400_with_a_clear_message(
    api: Any, records: Path, path: str, params: dict[str, str], message: str
) -> None:
    _, resp = await api.get(path, params=params)
    assert resp.status == 400, resp.text
    assert message in resp.json["error"]
    # The injection attempts changed nothing: the data is all still there.
    body = await get(api, "/api/v1/summary")
    exp = expected(records, 0, 2**50)
    assert body["data"]["reports"] == {"visit": exp["visits"], "activity": exp["activities"]}


async def test_repeated_parameter_is_400(api: Any) -> None:
    _, resp = await api.get("/api/v1/geo?cell=1&cell=2")
    assert resp.status == 400 and resp.json["error"] == "cell: given 2 times, expected once"


async def test_unknown_path_is_json_404(api: Any) -> None:
    _, resp = await api.get("/api/v1/nope")
    assert resp.status == 404 and "no such path" in resp.json["error"]


def test_minute_constant() -> None:
    assert MINUTE == 60_000
