"""How every figure is measured and judged: the sizes, rates and latencies taken in
interleaved rounds, and the ratio of their medians against a target."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    tracking_records: int
    claim_sizes: tuple[int, ...]
    status_sizes: tuple[int, int]
    memory_records: int
    pipeline_docs: int
    recovery_docs: int
    repeat: int
    peer_status: int  # failed documents (ours) and failed jobs (RQ's) for figure 3b


FULL = Sizes(
    5_000, (10_000, 100_000, 1_000_000), (10_000, 1_000_000), 100_000, 300, 5_000, 50, 100_000
)


QUICK = Sizes(1_000, (1_000, 10_000, 100_000), (1_000, 100_000), 10_000, 60, 1_000, 20, 100_000)


@dataclass
class Figure:
    number: int
    name: str
    value: float | None = None
    target: str = ""
    passed: bool | None = None  # None: shown for information, no target
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    part: str = ""  # "b", "c", ...: a figure's further rows

    @property
    def label(self) -> str:
        return f"{self.number}{self.part}"


def judged(
    number: int, name: str, value: float, target: str, part: str = "", **details: Any
) -> Figure:
    """A figure with its verdict; ``target`` is ">= x" or "<= x", or "" for a figure
    shown for information."""
    passed = None
    if target:
        op, limit = target.split()
        passed = value >= float(limit) if op == ">=" else value <= float(limit)
    return Figure(number, name, round(value, 3), target, passed, details, part=part)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(
    fn: Callable[[], T], repeat: int, after: Callable[[T], object] = lambda _: None
) -> float:
    """Median latency of ``fn`` over ``repeat`` calls, after one untimed warm-up call;
    ``after`` runs untimed on each result (to undo what ``fn`` changed)."""
    after(fn())
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
        after(out)
    return statistics.median(samples) * 1000


@dataclass(frozen=True)
class Paired:
    ratio: float  # median of the per-round ratios measured / baseline
    measured: float  # median rate (or latency)
    baseline: float
    ratios: list[float]  # every round's ratio, to show the spread


def interleaved(rounds: int, **sides: Callable[[], float]) -> dict[str, list[float]]:
    """Every side measured once per round, ``rounds`` times, the order rotated each
    round (two sides: swapped), so no side always runs first or right after another."""
    names = list(sides)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(sides[name]())
    return out


def against(measured: list[float], baseline: list[float]) -> Paired:
    """The median of the per-round ratios holds up on a machine busy in bursts."""
    ratios = [m / b for m, b in zip(measured, baseline, strict=True)]
    return Paired(
        statistics.median(ratios),
        statistics.median(measured),
        statistics.median(baseline),
        [round(r, 3) for r in ratios],
    )


def paired(rounds: int, measured: Callable[[], float], baseline: Callable[[], float]) -> Paired:
    """Two rates measured back to back, ``rounds`` times, the order swapped each round."""
    rates = interleaved(rounds, measured=measured, baseline=baseline)
    return against(rates["measured"], rates["baseline"])


def note(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)
