"""A stand-in gateway for bench tests: an aiohttp server on a free port, in its own thread.

It counts requests, decodes the reports like the real gateway, can answer some requests
with 503 (``fail``), can stall, and can land every accepted report in a record directory
as the pipeline does — the gateway's re-encoded value, in the partition murmur2 maps its
userId to, under the date of receipt, written by the sink's own :class:`PartitionWriter`
(segments and checkpoints) — so ``bench verify`` can be tested end to end without Kafka.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from footfall.kafka import partition_for
from footfall.layout import MS_PER_DAY
from footfall.reports import ReportType, decode_reports, encode_report
from sink.checkpoint import CheckpointStore
from sink.writer import PartitionWriter

# fail(n, report_type) -> (status, write_anyway) or (status, write_anyway, error code) for request
# number n (1-based), or None for 200. The code goes in the JSON body's "error" (default "x").
FailPolicy = Callable[[int, ReportType], "tuple[int, bool] | tuple[int, bool, str] | None"]


class FakeGateway:
    """See the module docstring. Use as a context manager; ``.url`` is the base URL."""

    def __init__(
        self,
        record_directory: Path | None = None,
        fail: FailPolicy | None = None,
        stall: tuple[int, float] | None = None,
        partitions: int = 3,
    ) -> None:
        self.record_directory = record_directory
        self.partitions = partitions
        self.fail = fail
        self.stall = stall  # (request number, seconds): hold that response that long
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.reports: Counter[ReportType] = Counter()
        self.times: list[float] = []
        self.encodings: Counter[str] = Counter()
        self.bodies: list[tuple[ReportType, bytes]] = []
        self.keep_bodies = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._writers: dict[tuple[ReportType, int], PartitionWriter] = {}
        self._offsets: dict[tuple[ReportType, int], int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake gateway did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        for writer in self._writers.values():
            writer.close()

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{kind}/v1", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        report_type = ReportType(request.match_info["kind"])
        body = await request.read()  # aiohttp already undid Content-Encoding: gzip
        with self._lock:
            self.requests += 1
            n = self.requests
            self.by_path[request.path] += 1
            self.times.append(time.monotonic())
            self.encodings[request.headers.get("Content-Encoding", "identity")] += 1
            if self.keep_bodies:
                self.bodies.append((report_type, body))
        if self.stall is not None and n == self.stall[0]:
            await asyncio.sleep(self.stall[1])
        reports = decode_reports(report_type, body)
        verdict = self.fail(n, report_type) if self.fail else None
        status, write, code = (200, True, "") if verdict is None else (*verdict[:2], (verdict[2:] or ("x",))[0])
        if write:
            self._land(report_type, reports)
        with self._lock:
            self.statuses[status] += 1
            if status == 200:
                self.reports[report_type] += len(reports)
        headers = {"Retry-After": "0"} if status == 503 else None
        payload = {"accepted": len(reports)} if status == 200 else {"error": code, "message": "fake"}
        return web.json_response(payload, status=status, headers=headers)

    def _land(self, report_type: ReportType, reports: list) -> None:  # type: ignore[type-arg]
        if self.record_directory is None:
            return
        day = time.time_ns() // 1_000_000 // MS_PER_DAY  # the record timestamp: the time of receipt
        with self._lock:
            if (report_type, 0) not in self._writers:
                # As the sink on assignment: every partition recovers, writing its first checkpoint.
                store = CheckpointStore(self.record_directory, durable=False)
                for partition in range(self.partitions):
                    writer = PartitionWriter(self.record_directory, str(report_type), partition, store, fsync="never")
                    # A second gateway on one directory continues the log (as Kafka keeps it).
                    self._offsets[report_type, partition] = writer.recover().offset + 1
                    self._writers[report_type, partition] = writer
            touched = set()
            for report in reports:
                tp = (report_type, partition_for(str(report.userId).encode(), self.partitions))
                writer = self._writers[tp]
                offset = self._offsets[tp]
                self._offsets[tp] = offset + 1
                writer.append(encode_report(report) + b"\n", 1, offset, offset, day)
                touched.add(tp)
            for tp in touched:
                self._writers[tp].commit()
