"""Reading /metrics text back: what footfall.metrics.render writes, footfall.promtext reads."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from footfall import promtext
from footfall.metrics import Registry, render


@pytest.fixture
def text() -> str:
    reg = Registry()
    requests = reg.counter("demo_requests_total", "requests", ("route", "status"))
    requests.labels("/api/visit/v1", "200").inc(3)
    requests.labels("/api/visit/v1", "503").inc(2)
    requests.labels("/api/activity/v1", "200").inc(5)
    reg.counter("demo_paths_total", "odd label values", ("path",)).labels('a"b\\c\nd').inc(7)
    reg.gauge("demo_inflight_bytes", "bytes").set(1.5)
    seconds = reg.histogram("demo_seconds", "latency", ("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        seconds.labels("/api/visit/v1").observe(v)
    return render([reg.snapshot()])


def test_value_finds_a_sample_by_name_and_labels(text: str) -> None:
    assert promtext.value(text, "demo_requests_total", route="/api/visit/v1", status="503") == 2
    assert promtext.value(text, "demo_inflight_bytes") == 1.5
    assert promtext.value(text, "demo_requests_total", route="/nowhere") is None
    assert promtext.value(text, "demo_absent_total") is None


def test_total_sums_the_samples_whose_labels_match(text: str) -> None:
    assert promtext.total(text, "demo_requests_total") == 10
    assert promtext.total(text, "demo_requests_total", route="/api/visit/v1") == 5
    assert promtext.total(text, "demo_requests_total", status="200") == 8
    assert promtext.total(text, "demo_absent_total") == 0


def test_escaped_label_values_come_back_as_written(text: str) -> None:
    assert promtext.value(text, "demo_paths_total", path='a"b\\c\nd') == 7
    [sample] = [s for s in promtext.samples(text) if s.name == "demo_paths_total"]
    assert sample.labels == {"path": 'a"b\\c\nd'}


def test_histograms_read_back_as_buckets_sum_and_count(text: str) -> None:
    route = "/api/visit/v1"
    buckets = {
        s.labels["le"]: s.value
        for s in promtext.samples(text)
        if s.name == "demo_seconds_bucket" and s.labels["route"] == route
    }
    assert buckets == {"0.1": 2, "1": 3, "+Inf": 4}  # cumulative; upper bounds inclusive
    assert promtext.value(text, "demo_seconds_count", route=route) == 4
    assert promtext.value(text, "demo_seconds_sum", route=route) == pytest.approx(3.65)


def test_process_metrics_and_build_info_are_read_too(text: str) -> None:
    assert promtext.total(text, "process_cpu_seconds_total") > 0
    assert promtext.value(text, "footfall_build_info") == 1


def test_text_that_is_not_an_exposition_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        list(promtext.samples("this is { not prometheus text\n"))


@pytest.fixture
def server(text: str) -> Iterator[str]:
    body = text.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        serving = threading.Thread(target=httpd.serve_forever, daemon=True)
        serving.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/metrics"  # pytest resumes here also after a failure
        httpd.shutdown()
        serving.join()


def test_fetch_reads_a_metrics_endpoint(server: str, text: str) -> None:
    fetched = promtext.fetch(server, timeout=5)
    assert fetched == text
    assert promtext.total(fetched, "demo_requests_total") == 10


def test_fetch_from_a_closed_port_is_an_os_error(server: str) -> None:
    closed = server.rsplit(":", 1)[0] + ":1/metrics"
    with pytest.raises(OSError):
        promtext.fetch(closed, timeout=2)
