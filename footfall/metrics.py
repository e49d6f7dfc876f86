"""Prometheus metrics aggregated over the worker processes of one service.

A role declares its metric set once, as a :class:`MetricSet` subclass whose class attributes
are :func:`counter`, :func:`gauge` and :func:`histogram` declarations (``gateway/metrics.py``,
``sink/instruments.py``, the dashboard's ``dashboard/app.py``); an instance creates them in
its process's registry. Counter series only go up: they have ``inc()`` and nothing else.

Each process records into its own in-memory :class:`Registry` (no locks, no syscalls
on the hot path). A :class:`SnapshotWriter` task dumps the registry every second to
``<metrics-dir>/<pid>.json`` (atomic replace). Whichever process serves ``/metrics``
merges every snapshot in the directory with its own live registry: counters and
histograms add up over all processes, dead ones included (so a restarted worker does
not make counters go backwards); gauges add up over live processes only.

Every exposition also carries, whatever the role:

- ``process_*`` (CPU seconds, resident and virtual memory, open and maximum file
  descriptors, start time) for each live process that keeps a registry, one series per
  process with a ``pid`` label (``sum without (pid)`` gives the service's total); a dead
  process's series vanish with it;
- ``footfall_build_info{version, python}`` = 1: what code answers.

(Over 400 lines on purpose: the registry, the snapshot merge and the text rendering are one
format — what a snapshot holds is what the merge adds up and what ``render`` writes.)
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import platform
import resource
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar, overload

import orjson

from footfall import __version__

__all__ = [
    "LABEL_SEPARATOR",
    "LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricSet",
    "Registry",
    "SnapshotWriter",
    "collect",
    "counter",
    "gauge",
    "histogram",
    "render",
]

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
#: A snapshot's ``samples`` are keyed by the series' label values joined with this character.
LABEL_SEPARATOR: Final = "\x1f"

Kind = Literal["counter", "gauge", "histogram"]

#: The standard process metrics: name, kind, help, key in a snapshot's ``process`` sample.
_PROCESS_METRICS: Final = (
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds", "cpu"),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes", "rss"),
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes", "vms"),
    ("process_open_fds", "gauge", "Number of open file descriptors", "fds"),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors", "max_fds"),
    ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds", "start"),
)
_BUILD_INFO: Final = (
    "# HELP footfall_build_info Footfall version and Python version answering (always 1)\n"
    "# TYPE footfall_build_info gauge\n"
    f'footfall_build_info{{version="{__version__}",python="{platform.python_version()}"}} 1\n'
)
_start_time: float | None = None


def _process_sample() -> dict[str, float]:
    """This process's CPU, memory, descriptors and start time (Linux ``/proc``; CPU only elsewhere)."""
    global _start_time
    times = os.times()
    sample = {"cpu": times.user + times.system}
    with contextlib.suppress(OSError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        vms, rss = Path("/proc/self/statm").read_text().split()[:2]
        sample["vms"], sample["rss"] = int(vms) * page, int(rss) * page
        sample["fds"] = sum(1 for _ in Path("/proc/self/fd").iterdir())
        sample["max_fds"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if _start_time is None:
            stat = Path("/proc/self/stat").read_text()
            ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22: start time in clock ticks since boot
            boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
            _start_time = int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
        sample["start"] = _start_time
    return sample


class _CounterChild:
    """One labelled series of a counter: it only goes up (``inc`` of a negative amount is refused)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up: inc({amount}) refused")
        self.value += amount


class _GaugeChild:
    """One labelled series of a gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _HistogramChild:
    """One labelled series of a histogram: a count per bucket and the sum of observations."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value


_C = TypeVar("_C", _CounterChild, _GaugeChild, _HistogramChild)


class _Metric(Generic[_C]):
    kind: ClassVar[Kind]

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _C] = {}

    def _new_child(self) -> _C:
        raise NotImplementedError

    def labels(self, *values: str) -> _C:
        """The series with these label values (one per label name, in order), created at first use."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} has labels {self.labelnames}, got values {values}")
            child = self._children[values] = self._new_child()
        return child

    def _samples(self) -> dict[str, Any]:
        raise NotImplementedError


_S = TypeVar("_S", _CounterChild, _GaugeChild)


class _Scalar(_Metric[_S]):
    """A metric whose series are one number each."""

    def _samples(self) -> dict[str, Any]:
        return {LABEL_SEPARATOR.join(k): v.value for k, v in self._children.items()}

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)


class Counter(_Scalar[_CounterChild]):
    """A monotonically increasing count: its series have ``inc()`` and nothing that lowers them."""

    kind: ClassVar[Kind] = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()


class Gauge(_Scalar[_GaugeChild]):
    """A value that goes up and down (summed over live processes)."""

    kind: ClassVar[Kind] = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def dec(self, amount: float = 1.0) -> None:
        self.labels().dec(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)


class Histogram(_Metric[_HistogramChild]):
    """Counts of observations per bucket (upper bounds inclusive, as Prometheus)."""

    kind: ClassVar[Kind] = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def _samples(self) -> dict[str, Any]:
        return {LABEL_SEPARATOR.join(k): [c.counts, c.sum] for k, c in self._children.items()}


_M = TypeVar("_M", bound=_Metric[Any])


class Registry:
    """The metrics of one process."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric[Any]] = {}

    def _register(self, metric: _M) -> _M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help_text, labelnames))

    def histogram(
        self, name: str, help_text: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return self._register(Histogram(name, help_text, labelnames, buckets))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of every metric, tagged with this process's pid."""
        return {
            "pid": os.getpid(),
            "process": _process_sample(),
            "metrics": {
                m.name: {
                    "kind": m.kind,
                    "help": m.help,
                    "labelnames": m.labelnames,
                    "buckets": getattr(m, "buckets", None),
                    "samples": m._samples(),
                }
                for m in self._metrics.values()
            },
        }


class _Declared(Generic[_M]):
    """A metric declared on a :class:`MetricSet` subclass; each instance of the set gets its own."""

    def __init__(self, create: Callable[[Registry], _M]) -> None:
        self.create: Callable[[Registry], _M] = create
        self.attribute = ""

    def __set_name__(self, owner: type[MetricSet], name: str) -> None:
        self.attribute = name

    @overload
    def __get__(self, instance: None, owner: type[MetricSet]) -> _Declared[_M]: ...
    @overload
    def __get__(self, instance: MetricSet, owner: type[MetricSet]) -> _M: ...
    def __get__(self, instance: MetricSet | None, owner: type[MetricSet]) -> _Declared[_M] | _M:
        # Only reached before MetricSet.__init__ put the instance's own metric in its __dict__.
        if instance is None:
            return self
        raise AttributeError(f"{owner.__name__}.{self.attribute}: metric not created yet (MetricSet.__init__)")


def counter(name: str, help_text: str, labelnames: Sequence[str] = ()) -> _Declared[Counter]:
    """Declare a :class:`Counter` on a :class:`MetricSet`."""
    return _Declared(lambda registry: registry.counter(name, help_text, labelnames))


def gauge(name: str, help_text: str, labelnames: Sequence[str] = ()) -> _Declared[Gauge]:
    """Declare a :class:`Gauge` on a :class:`MetricSet`."""
    return _Declared(lambda registry: registry.gauge(name, help_text, labelnames))


def histogram(
    name: str, help_text: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> _Declared[Histogram]:
    """Declare a :class:`Histogram` on a :class:`MetricSet`."""
    return _Declared(lambda registry: registry.histogram(name, help_text, labelnames, buckets))


class MetricSet:
    """The metrics one role records in one process, declared once as class attributes.

    ::

        class GatewayMetrics(MetricSet):
            requests = counter("footfall_gateway_requests_total", "HTTP requests answered", ("route", "status"))

        metrics = GatewayMetrics()  # creates every declared metric in a new Registry
        metrics.requests.labels("/api/visit/v1", "200").inc()

    Each instance registers its own metrics, so tests can build as many sets as they like.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = Registry() if registry is None else registry
        for cls in reversed(type(self).__mro__):
            for attribute, declared in vars(cls).items():
                if isinstance(declared, _Declared):
                    self.__dict__[attribute] = declared.create(self.registry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        live = _alive(int(snap.get("pid", 0)))
        for name, metric in snap.get("metrics", {}).items():
            if metric["kind"] == "gauge" and not live:
                continue
            into = merged.setdefault(name, {**metric, "samples": {}})
            for key, value in metric["samples"].items():
                if metric["kind"] == "histogram":
                    prev = into["samples"].get(key)
                    if prev is None:
                        into["samples"][key] = [list(value[0]), value[1]]
                    else:
                        prev[0] = [a + b for a, b in zip(prev[0], value[0], strict=True)]
                        prev[1] += value[1]
                else:
                    into["samples"][key] = into["samples"].get(key, 0.0) + value
    return merged


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _labels(names: Sequence[str], key: str, extra: str = "") -> str:
    values = key.split(LABEL_SEPARATOR) if names else []
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _process_lines(snapshots: Sequence[dict[str, Any]]) -> list[str]:
    samples = sorted(
        (int(snap["pid"]), snap["process"]) for snap in snapshots if "process" in snap and _alive(int(snap["pid"]))
    )
    lines: list[str] = []
    for name, kind, help_text, key in _PROCESS_METRICS:
        values = [(pid, sample[key]) for pid, sample in samples if key in sample]
        if values:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f'{name}{{pid="{pid}"}} {_fmt(value)}' for pid, value in values)
    return lines


def render(snapshots: Iterable[dict[str, Any]]) -> str:
    """Prometheus text exposition (format 0.0.4) of the merged snapshots, process metrics and build info."""
    snapshots = list(snapshots)
    lines: list[str] = []
    for name, metric in sorted(_merge(snapshots).items()):
        kind, names = metric["kind"], metric["labelnames"]
        lines.append(f"# HELP {name} {metric['help']}")
        lines.append(f"# TYPE {name} {kind}")
        for key, value in sorted(metric["samples"].items()):
            if kind == "histogram":
                counts, total = value
                cumulative = 0
                for bound, count in zip([*metric["buckets"], math.inf], counts, strict=True):
                    cumulative += count
                    le = 'le="' + _fmt(bound) + '"'
                    lines.append(f"{name}_bucket{_labels(names, key, le)} {cumulative}")
                lines.append(f"{name}_sum{_labels(names, key)} {_fmt(total)}")
                lines.append(f"{name}_count{_labels(names, key)} {cumulative}")
            else:
                lines.append(f"{name}{_labels(names, key)} {_fmt(value)}")
    lines.extend(_process_lines(snapshots))
    return "\n".join(lines) + "\n" + _BUILD_INFO


def collect(directory: Path | None, live: Registry) -> str:
    """Render the live registry merged with every other process's snapshot in ``directory``."""
    own = live.snapshot()
    snapshots = [own]
    if directory is not None:
        for path in directory.glob("*.json"):
            if path.stem == str(own["pid"]):
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                snapshots.append(orjson.loads(path.read_bytes()))
    return render(snapshots)


class SnapshotWriter:
    """Dumps a registry to ``<directory>/<pid>.json`` every ``interval`` seconds."""

    def __init__(self, registry: Registry, directory: Path, interval: float = 1.0) -> None:
        self.registry = registry
        self.directory = directory
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def write(self) -> None:
        """Write one snapshot now (atomic: temp file, then rename)."""
        path = self.directory / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(self.registry.snapshot()))
        tmp.replace(path)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            with contextlib.suppress(OSError):
                self.write()

    def start(self) -> None:
        if self._task is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the task and write a final snapshot (so counts survive the process)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            with contextlib.suppress(OSError):
                self.write()
