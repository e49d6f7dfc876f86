"""Reading Prometheus text exposition (``/metrics`` answers) with ``prometheus_client.parser``.

The stack's live view, the rehearsal, perf scripts and tests all read metrics back from the
roles; they do it here rather than by splitting lines by hand.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Sample", "fetch", "samples", "total", "value"]


class Sample(NamedTuple):
    """One sample line: metric name (with any ``_total``/``_bucket`` suffix), labels, value."""

    name: str
    labels: Mapping[str, str]
    value: float


def samples(text: str) -> Iterator[Sample]:
    """Every sample in ``text``.

    Raises:
        ValueError: ``text`` is not Prometheus text exposition.
    """
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield Sample(s.name, s.labels, s.value)


def _matches(sample: Sample, name: str, labels: Mapping[str, str]) -> bool:
    return sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample named ``name`` whose labels include ``labels``; ``None`` if absent."""
    return next((s.value for s in samples(text) if _matches(s, name, labels)), None)


def total(text: str, name: str, **labels: str) -> float:
    """The sum over every sample named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(s.value for s in samples(text) if _matches(s, name, labels))


def fetch(url: str, timeout: float = 2.0) -> str:
    """GET ``url`` (a loopback ``/metrics`` endpoint) and return the body as text.

    Raises:
        OSError: the endpoint did not answer (``urllib.error.URLError`` is an ``OSError``).
    """
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http URLs we built
        body: bytes = resp.read()
    return body.decode()
