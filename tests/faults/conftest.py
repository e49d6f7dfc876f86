"""Fixtures of the fault suite: a seeded scenario running the real stack, torn down whatever happens.

``FOOTFALL_FAULT_SEED=N`` replays a run's fault schedule (each scenario prints its seed and
every fault it injects with the time since it started). Role logs of a failed scenario are
printed after its failure.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Scenario

_BASE_SEED = int(os.environ.get("FOOTFALL_FAULT_SEED") or random.SystemRandom().randrange(1, 2**31))


def pytest_report_header() -> str:
    return f"fault schedule seed: {_BASE_SEED} (replay with FOOTFALL_FAULT_SEED={_BASE_SEED})"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def faults(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scenario]:
    """One scenario: ``faults.stack()``, ``faults.bench(...)``, ``faults.log(...)``, ``faults.rng``."""
    seed = _BASE_SEED
    print(f"fault schedule seed: {seed} (replay with FOOTFALL_FAULT_SEED={seed})")
    scenario = Scenario(seed, tmp_path)
    try:
        yield scenario
    finally:
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            print(scenario.diagnostics())
        scenario.close()
