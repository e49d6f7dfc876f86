"""docs/security.md names the tests that prove each mitigation: every name it cites must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_named_in_security_md_exists() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    defined = {
        m[1] for path in (ROOT / "tests").rglob("test_*.py") for m in re.finditer(r"def (test_\w+)", path.read_text())
    }
    cited = set(re.findall(r"\b(test_\w+)\b(?!\.py)", doc))  # not module names
    missing = sorted(cited - defined)
    assert not missing, f"docs/security.md cites tests that do not exist: {missing}"
    for path in set(re.findall(r"`(tests/[\w/]+\.py)", doc)):
        assert (ROOT / path).exists(), f"docs/security.md cites {path}, which does not exist"
