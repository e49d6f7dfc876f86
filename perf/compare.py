"""Regression guard: compare the ratios of two e2e results files.

Only same-run ratios are compared (see :mod:`perf.results`): absolute rates move with
the machine's load, ratios much less. A ratio *regressed* when it dropped by more than
``threshold`` (relative) from the baseline. A ratio missing on either side is reported
and ignored (e.g. a run with ``--skip-references``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["RatioChange", "compare", "compare_files", "format_changes"]


@dataclass(frozen=True)
class RatioChange:
    """One ratio, baseline vs current."""

    name: str
    baseline: float | None
    current: float | None
    threshold: float

    @property
    def change(self) -> float | None:
        """Relative change (``-0.2`` = 20 % lower), None if a side is missing."""
        if self.baseline is None or self.current is None or self.baseline == 0:
            return None
        return self.current / self.baseline - 1.0

    @property
    def regressed(self) -> bool:
        change = self.change
        return change is not None and change < -self.threshold


def _ratios(content: Mapping[str, Any]) -> dict[str, float | None]:
    values = content.get("summary", {}).get("ratios", {})
    return {k: (None if v is None else float(v)) for k, v in values.items()}


def compare(baseline: Mapping[str, Any], current: Mapping[str, Any], threshold: float) -> list[RatioChange]:
    """Every ratio of either file, with its change."""
    base, cur = _ratios(baseline), _ratios(current)
    names = list(base) + [n for n in cur if n not in base]
    return [RatioChange(n, base.get(n), cur.get(n), threshold) for n in names]


def compare_files(baseline: Path, current: Path | Mapping[str, Any], threshold: float) -> list[RatioChange]:
    """:func:`compare` on results files (``current`` may be the content already loaded)."""
    cur = orjson.loads(current.read_bytes()) if isinstance(current, Path) else current
    return compare(orjson.loads(baseline.read_bytes()), cur, threshold)


def format_changes(changes: list[RatioChange], baseline_name: str) -> str:
    """A markdown table of the comparison, with a verdict line."""

    def n(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    lines = [
        f"### Compared with {baseline_name} (threshold {changes[0].threshold:.0%} drop)" if changes else "",
        "",
        "| ratio | baseline | current | change | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for c in changes:
        change = "–" if c.change is None else f"{c.change:+.1%}"
        verdict = "REGRESSED" if c.regressed else ("missing" if c.change is None else "ok")
        lines.append(f"| {c.name} | {n(c.baseline)} | {n(c.current)} | {change} | {verdict} |")
    regressed = [c.name for c in changes if c.regressed]
    lines += ["", "Regressed: " + ", ".join(regressed) if regressed else "No ratio regressed.", ""]
    return "\n".join(lines)
