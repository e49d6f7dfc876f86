"""Histograms read from Prometheus text (:mod:`footfall.promtext`): buckets, their difference over a phase, quantiles.

The sink exposes ``footfall_sink_e2e_latency_seconds`` as a cumulative histogram. A
phase's latencies are the bucket counts after it minus those before it; a quantile
is then interpolated linearly inside its bucket, as PromQL's ``histogram_quantile``
does, so it is only as fine as the buckets (…, 0.25, 0.5, 1, 2.5 s, …).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from footfall import promtext

__all__ = ["bucket_bound", "bucket_counts", "histogram_quantile", "share_at_most", "subtract"]


def bucket_counts(text: str, name: str) -> dict[float, float]:
    """Cumulative counts per upper bound of histogram ``name``, summed over all label sets."""
    out: dict[float, float] = {}
    for sample in promtext.samples(text):
        if sample.name == f"{name}_bucket" and "le" in sample.labels:
            bound = float(sample.labels["le"])  # "+Inf" reads as infinity
            out[bound] = out.get(bound, 0.0) + sample.value
    return out


def subtract(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Bucket counts observed between two scrapes."""
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """The ``q`` quantile (0..1) of a cumulative histogram; None when it is empty.

    Returns the highest finite bound when the quantile falls in the ``+Inf`` bucket.
    """
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def share_at_most(bound: float, cumulative: Mapping[float, float]) -> float | None:
    """Fraction (0..1) of observations ``<= bound``; ``bound`` must be one of the bucket bounds."""
    total = cumulative.get(math.inf) or (cumulative[max(cumulative)] if cumulative else 0.0)
    if not total or bound not in cumulative:
        return None
    return cumulative[bound] / total


def bucket_bound(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Upper bound of the bucket holding the ``q`` quantile: a figure that is never an underestimate."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    return next(b for b in bounds if cumulative[b] >= rank)
