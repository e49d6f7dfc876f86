"""pytest set-up shared by the micro-benchmark suites in ``perf/`` (pytest-benchmark).

Run them all together (they are kept out of the default ``pytest`` run: ``testpaths`` is
``tests`` and ``addopts`` has ``--benchmark-disable``)::

    pytest perf/ --benchmark-enable                      # run and print the tables
    pytest perf/ --benchmark-enable --benchmark-autosave # ... and save .benchmarks/<machine>/NNNN_*.json
    pytest perf/ --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:25%

Collection: besides pytest's ``test_*.py``, every module of ``perf/`` (outside
``references/``, ``results/``, ``profiles/``) whose source defines a ``test_`` function is
collected, so the roles' ``bench_*.py`` files need no ini change. The runner modules
(``e2e``, ``profile``, …) define none and are not collected.

Every benchmark without an explicit ``@pytest.mark.benchmark(group=...)`` is grouped by its
module (``bench_gateway`` …), so the tables come out per role.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

_HERE: Final = Path(__file__).resolve().parent
_SKIP_DIRS: Final = {"references", "results", "profiles", "__pycache__"}
_HAS_TESTS: Final = re.compile(r"^(async )?def test_|^class Test", re.MULTILINE)


def _default_pattern(path: Path) -> bool:
    return path.name.startswith("test_") or path.name.endswith("_test.py")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``perf/*.py`` modules that define tests (``bench_*.py``) though they miss ``test_*.py``."""
    if file_path.suffix != ".py" or _default_pattern(file_path) or file_path.name.startswith(("_", "conftest")):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest's python plugin collects it already
    try:
        relative = file_path.resolve().relative_to(_HERE)
    except ValueError:
        return None
    if _SKIP_DIRS.intersection(relative.parts[:-1]):
        return None
    try:
        source = file_path.read_text(errors="replace")
    except OSError:
        return None
    if not _HAS_TESTS.search(source):
        return None
    module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group ungrouped benchmarks of ``perf/`` by their module name."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if _HERE not in path.parents or "benchmark" not in getattr(item, "fixturenames", ()):
            continue
        if item.get_closest_marker("benchmark") is None:
            item.add_marker(pytest.mark.benchmark(group=path.stem))
