"""Fixtures for bench tests: a fake gateway on a free port, and a helper running the bench in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.report import summary, write_run_file
from bench.runner import RunResult, run
from bench.settings import BenchSettings
from tests.bench.fake_gateway import FakeGateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[FakeGateway]:
    """A fake gateway landing accepted reports under ``tmp_path / "records"``."""
    with FakeGateway(record_directory=tmp_path / "records") as gw:
        yield gw


def settings_for(url: str, **overrides: Any) -> BenchSettings:
    """Bench settings for tests: seed 7, quiet, short timeouts, unless overridden."""
    values: dict[str, Any] = {
        "web_service": url,
        "seed": 7,
        "quiet": True,
        "timeout": 5.0,
        "shutdown_timeout": 5.0,
        "concurrent_clients": 2,
        "report_interval": 0.0,
    }
    values.update(overrides)
    return msgspec.convert(values, BenchSettings, strict=False)


async def run_bench(
    url: str, run_file: Path | None = None, run_id: int | None = None, **overrides: Any
) -> tuple[RunResult, dict[str, Any]]:
    """Run the bench in this process (a fresh run id unless given); optionally write the run file."""
    settings = settings_for(url, **overrides)
    print(f"bench seed {settings.seed}")
    result = await run(settings, settings.seed, run_id=run_id)
    content = summary(result)
    if run_file is not None:
        write_run_file(str(run_file), content)
    return result, content
