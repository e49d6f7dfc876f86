"""The page in a real browser: headless Chromium (Debian's) driven by Playwright, offline.

Every request to anything but the dashboard itself is aborted and recorded; the tests
assert none was attempted, so the page provably needs no network.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.dashboard.conftest import REPO, make_records
from tests.dashboard.test_exact import add_hard_cases

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHARTS = (
    "chart-timeseries",
    "chart-activity-types",
    "chart-algorithm-types",
    "chart-visit-durations",
    "chart-unique-users",
    "chart-poi-visits",
    "chart-poi-users",
    "chart-geo",
)
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Watched:
    """A page with its console errors, failed requests and blocked (non-local) requests."""

    def __init__(self, browser: Any, base_url: str) -> None:
        # bypass_csp: Playwright evaluates its predicates with eval(), which the page's CSP forbids.
        self.context = browser.new_context(viewport={"width": 1400, "height": 1800}, bypass_csp=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.blocked: list[str] = []
        self.bad_status: list[str] = []
        local = urlsplit(base_url).netloc

        def route(r: Any) -> None:
            if urlsplit(r.request.url).netloc == local or r.request.url.startswith("data:"):
                r.continue_()
            else:
                self.blocked.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        self.page.on("response", lambda r: self.bad_status.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    def refreshes(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.refreshes || 0)"))

    def wait_refresh(self, after: int) -> None:
        self.page.wait_for_function(f"Number(document.body.dataset.refreshes || 0) > {after}", timeout=15_000)

    def chart(self, chart_id: str) -> dict[str, str]:
        result: dict[str, str] = self.page.eval_on_selector(f"#{chart_id}", "n => ({...n.dataset})")
        return result

    def assert_clean(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.failed == [], f"failed requests: {self.failed}"
        assert self.bad_status == [], f"HTTP errors: {self.bad_status}"
        assert self.blocked == [], f"non-local requests attempted: {self.blocked}"

    def close(self) -> None:
        self.context.close()


def _canvas_painted(w: Watched, chart_id: str) -> bool:
    # Some non-background pixel in the chart's canvas: it really drew something.
    return bool(
        w.page.evaluate(
            """id => { const c = document.querySelector('#' + id + ' canvas'); if (!c) return false;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < d.length; i += 4 * 7) if (d[i] !== 0) return true; return false; }""",
            chart_id,
        )
    )


def test_page_renders_every_chart_offline_and_filters_change_data(
    browser: Any, server_factory: Any, tmp_path: Path, seed: int
) -> None:
    server = server_factory(make_records(tmp_path / "records", seed))
    w = Watched(browser, server.url)
    try:
        w.page.goto(server.url + "/")
        w.page.wait_for_function("document.body.dataset.state === 'ready'", timeout=15_000)
        w.page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1")
        for chart_id in CHARTS:
            info = w.chart(chart_id)
            assert info["state"] == "ready", f"{chart_id}: {info}"
            assert int(info["points"]) > 0 and int(info["total"]) > 0, f"{chart_id}: {info}"
            assert _canvas_painted(w, chart_id), f"{chart_id} drew nothing"
        assert "UTC" in w.page.inner_text("#as-of")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        w.page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        before = {c: w.chart(c) for c in CHARTS}

        # The type filter sits only on the charts that mix both kinds, and changes only them.
        filters = w.page.eval_on_selector_all(".chart-filter select", "ns => ns.map(n => n.dataset.chart)")
        assert filters == ["chart-timeseries", "chart-unique-users"]
        n = w.refreshes()
        w.page.select_option("#type-timeseries", "activity")
        w.wait_refresh(n)
        assert w.chart("chart-timeseries")["total"] != before["chart-timeseries"]["total"]
        for chart_id in CHARTS[1:]:
            assert w.chart(chart_id) == before[chart_id], chart_id

        # Time filter: the first day only -> every total shrinks.
        n = w.refreshes()
        w.page.select_option("#type-timeseries", "all")
        w.wait_refresh(n)
        n = w.refreshes()
        w.page.select_option("#range", "custom")
        w.page.fill("#from", "2018-01-01T00:00")
        w.page.fill("#to", "2018-01-02T00:00")
        w.page.click("#apply")
        w.wait_refresh(n)
        for chart_id in CHARTS:
            after = w.chart(chart_id)
            assert after["state"] == "ready", f"{chart_id}: {after}"
            assert int(after["total"]) < int(before[chart_id]["total"]), f"{chart_id}: {after} vs {before[chart_id]}"
        w.page.screenshot(path=str(ARTIFACTS / "dashboard-first-day.png"), full_page=True)
        w.assert_clean()
    finally:
        w.close()


def test_empty_state_then_data_appears(browser: Any, server_factory: Any, tmp_path: Path, seed: int) -> None:
    empty = tmp_path / "records"
    empty.mkdir()
    server = server_factory(empty)
    w = Watched(browser, server.url)
    try:
        w.page.goto(server.url + "/")
        w.page.wait_for_function("document.body.dataset.state === 'empty'", timeout=15_000)
        assert w.page.is_visible("#empty")
        assert not w.page.is_visible("#chart-timeseries")
        ARTIFACTS.mkdir(exist_ok=True)
        w.page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"), full_page=True)

        # Data lands: the page picks it up by itself (auto refresh), no reload.
        source = make_records(tmp_path / "later", seed, users=3, days=1)
        for topic in ("visit", "activity"):
            shutil.copytree(source / topic, empty / topic)
        w.page.wait_for_function("document.body.dataset.state === 'ready'", timeout=20_000)
        assert not w.page.is_visible("#empty")
        assert w.chart("chart-timeseries")["state"] == "ready"
        w.assert_clean()
    finally:
        w.close()


def test_enter_time_zero_and_a_failing_chart_leave_every_other_chart_drawn(
    browser: Any, server_factory: Any, tmp_path: Path, seed: int
) -> None:
    """A visit at enterTime=0 (all data spans ~50 years) draws every chart; a chart whose
    request fails shows its error in its own panel and the others still draw; distinct
    counting is a choice on the page, the default stated there."""
    records = make_records(tmp_path / "records", seed, users=4, days=2)
    add_hard_cases(records, random.Random(seed))()  # and the retried copies at once
    server = server_factory(records)
    w = Watched(browser, server.url)
    try:
        w.page.goto(server.url + "/")
        w.page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1", timeout=15_000)
        for chart_id in CHARTS:
            info = w.chart(chart_id)
            assert info["state"] == "ready", f"{chart_id}: {info}"
            assert _canvas_painted(w, chart_id), f"{chart_id} drew nothing"
        assert "per month" in w.page.inner_text("#bucket")
        assert "1970-01-01 00:00:00 UTC" in w.page.inner_text("#counted-range")
        assert "every landed line (default)" in w.page.inner_text("#counting")
        w.assert_clean()
        lines_total = int(w.chart("chart-timeseries")["total"])

        # Distinct counting: the retried copies are counted once.
        n = w.refreshes()
        w.page.select_option("#counting", "distinct")
        w.wait_refresh(n)
        assert int(w.chart("chart-timeseries")["total"]) < lines_total
        assert w.page.inner_text("#totals").startswith("Distinct reports")

        # One endpoint fails: only its panel says so.
        w.page.route("**/api/v1/geo?*", lambda r: r.fulfill(status=500, json={"error": "injected failure"}))
        n = w.refreshes()
        w.page.select_option("#counting", "lines")
        w.wait_refresh(n)
        assert w.chart("chart-geo")["state"] == "error"
        panel = w.page.locator("#chart-geo").locator("xpath=..").locator(".chart-error")
        assert "injected failure" in panel.inner_text()
        for chart_id in CHARTS:
            if chart_id != "chart-geo":
                assert w.chart(chart_id)["state"] == "ready", chart_id
        assert int(w.chart("chart-timeseries")["total"]) == lines_total
        assert not w.page.is_visible("#error")
    finally:
        w.close()
