"""Fixtures of the sink tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path
