"""Exponential backoff: the one formula every retry loop in Footfall uses.

``delay(attempt)`` is ``first * 2 ** (attempt - 1)`` capped at ``cap``: attempt 1 waits
``first``, each further attempt twice as long, never longer than ``cap``. Loops that many
clients run at once (bench) spread their retries with :func:`full_jitter`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "full_jitter"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for a retry loop: ``first`` seconds, doubling, at most ``cap`` seconds."""

    first: float
    cap: float

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={self.first} cap={self.cap}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        # 2**n overflows float for huge n; the cap is reached long before 64 doublings.
        return min(self.first * 2.0 ** min(attempt - 1, 64), self.cap)


def full_jitter(delay: float, rng: random.Random) -> float:
    """A uniform draw in ``[0, delay]``, so that clients retrying together spread out."""
    return rng.uniform(0, delay)
