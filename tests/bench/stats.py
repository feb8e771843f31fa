"""Pure helpers of the benchmark: samples, summaries, ratios, drift, checkpoints and goals."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MB = 1_000_000
CHECKPOINT_FRACTIONS = (0.0, 0.01, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Sample:
    """One timed transfer: ``instances`` instances of ``size`` bytes in total took ``seconds``."""

    measure: str  # cstore, rest-ingest, rest-retrieve, disk-write
    server: str
    client: str
    concurrency: int
    round: int
    instances: int
    size: int
    seconds: float
    transferred: int | None = None  # bytes on the wire when they differ from ``size`` (a zip archive)
    server_cpu: float | None = None  # CPU seconds the Orthanc process used during the run
    host_busy: float | None = None  # fraction of all the host's CPU time that was busy during the run
    retries: int = 0  # instances the server refused (HTTP 503, C-STORE failure) and the client sent again

    @property
    def rate(self) -> float:
        """Instances per second."""
        return self.instances / self.seconds

    @property
    def mbps(self) -> float:
        """MB (10^6 bytes) per second."""
        return self.size / MB / self.seconds

    @property
    def server_cpu_ms(self) -> float | None:
        """Orthanc's CPU milliseconds per instance."""
        return self.server_cpu / self.instances * 1000 if self.server_cpu is not None else None

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.measure, self.client, self.concurrency, self.server)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate, "mbps": self.mbps, "server_cpu_ms": self.server_cpu_ms}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0..1, not {fraction}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(milliseconds: Sequence[float]) -> dict[str, float | int]:
    """Median, p95, min and max of latencies in milliseconds."""
    return {
        "n": len(milliseconds),
        "median_ms": statistics.median(milliseconds),
        "p95_ms": percentile(milliseconds, 0.95),
        "min_ms": min(milliseconds),
        "max_ms": max(milliseconds),
    }


@dataclass(frozen=True)
class Summary:
    """The median over rounds of one measurement on one server."""

    measure: str
    client: str
    concurrency: int
    server: str
    n: int
    rate: float
    mbps: float
    rate_min: float
    rate_max: float
    server_cpu_ms: float | None = None  # median of Orthanc's CPU ms per instance
    host_busy: float | None = None  # median fraction of the host's CPUs busy
    retries: int = 0  # resends over all rounds

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarise(samples: Iterable[Sample]) -> list[Summary]:
    """One summary per (measure, client, concurrency, server), in the order first seen."""
    groups: dict[tuple[str, str, int, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.key, []).append(sample)
    summaries = []
    for (measure, client, concurrency, server), group in groups.items():
        rates = [sample.rate for sample in group]
        cpu = [sample.server_cpu_ms for sample in group if sample.server_cpu_ms is not None]
        busy = [sample.host_busy for sample in group if sample.host_busy is not None]
        summaries.append(
            Summary(
                measure=measure,
                client=client,
                concurrency=concurrency,
                server=server,
                n=len(group),
                rate=statistics.median(rates),
                mbps=statistics.median(sample.mbps for sample in group),
                rate_min=min(rates),
                rate_max=max(rates),
                server_cpu_ms=statistics.median(cpu) if cpu else None,
                host_busy=statistics.median(busy) if busy else None,
                retries=sum(sample.retries for sample in group),
            )
        )
    return summaries


def find_summary(
    summaries: Iterable[Summary], measure: str, client: str, concurrency: int, server: str
) -> Summary | None:
    for summary in summaries:
        if (summary.measure, summary.client, summary.concurrency, summary.server) == (
            measure,
            client,
            concurrency,
            server,
        ):
            return summary
    return None


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator of two medians measured side by side."""

    name: str
    numerator: str
    denominator: str
    numerator_value: float
    denominator_value: float
    unit: str

    @property
    def value(self) -> float:
        return self.numerator_value / self.denominator_value if self.denominator_value else math.inf

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "value": self.value}


def ratio(
    name: str, numerator: tuple[str, Summary | None], denominator: tuple[str, Summary | None], unit: str = "rate"
) -> Ratio | None:
    """The ratio of two summaries' medians (``unit`` rate: instances/s, mbps: MB/s); None if one is missing."""
    (numerator_label, top), (denominator_label, bottom) = numerator, denominator
    if top is None or bottom is None:
        return None
    return Ratio(name, numerator_label, denominator_label, getattr(top, unit), getattr(bottom, unit), unit)


def drift(first_rate: float, last_rate: float) -> float:
    """Relative change of a rate from the first to the last window (-0.2: 20 % slower at the end)."""
    if first_rate <= 0:
        raise ValueError(f"first rate must be positive, not {first_rate}")
    return last_rate / first_rate - 1


def checkpoints(total: int, fractions: Sequence[float] = CHECKPOINT_FRACTIONS) -> list[int]:
    """Archive sizes at which finds are timed: 0 .. total at the given fractions, without repeats."""
    if total < 1:
        raise ValueError(f"growth must be at least 1 instance, not {total}")
    return sorted({round(total * fraction) for fraction in fractions} | {0, total})


def window_rates(windows: Iterable[tuple[int, int, float]]) -> list[dict[str, float]]:
    """Ingest rate of each growth window (start, end, seconds)."""
    return [
        {"start": start, "end": end, "seconds": seconds, "rate": (end - start) / seconds}
        for start, end, seconds in windows
        if end > start and seconds > 0
    ]


@dataclass(frozen=True)
class Goal:
    """A target and whether the run reached it (None: not measured in this run)."""

    goal: str
    measured: float | None
    threshold: float
    comparison: str  # ">=", ">" or "<"
    unit: str

    @property
    def reached(self) -> bool | None:
        if self.measured is None:
            return None
        if self.comparison == ">=":
            return self.measured >= self.threshold
        if self.comparison == ">":
            return self.measured > self.threshold
        if self.comparison == "<":
            return self.measured < self.threshold
        raise ValueError(f"unknown comparison {self.comparison!r}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "reached": self.reached}


def ratio_value(ratios: Iterable[Ratio], name: str) -> float | None:
    for item in ratios:
        if item.name == name:
            return item.value
    return None
