"""docrecovery benchmarks: what tracking and recovery cost, as ratios.

Every figure is a ratio against a baseline measured in the same run, on the same
private redis-server (started here on a free port, append-only off), so a busy machine
slows both sides alike. Nothing is asserted: the table says PASS or MISS against each
target, and ``benchmarks/results/latest.json`` keeps the details.

    python -m benchmarks.run              # every figure, full sizes (a few minutes)
    python -m benchmarks.run --quick      # smaller sizes, for a smoke run
    python -m benchmarks.run --only 2,3   # some figures

Every benchmark record has the same text: a 100-character path, a query and a 2 KB
traceback. Large stores (figures 2 and 3) are written by a clone loader that copies
what one real ``record_failure`` call wrote; before each use it is checked against
``record_failure`` on a few documents, and refuses to run if they differ.

The peers (RQ, Dramatiq, Celery's own retry; ``peers.py``) are baselines of figures
1, 3 and 4, measured the same way on the same Redis, interleaved with our side.

The exit code is 0 whenever every figure was measured, whatever the results; 1 when a
figure could not be measured (its row says why).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.bench import HERE, REPO, Bench
from benchmarks.measure import FULL, QUICK, Figure, Sizes, note
from benchmarks.scaling import claim_scaling, status_scaling
from benchmarks.throughput import pipeline_overhead, recovery_throughput
from benchmarks.tracking import memory_per_record, tracking_cost

RESULTS = HERE / "results" / "latest.json"

FIGURES: dict[int, Callable[[Bench, Sizes], list[Figure]]] = {
    1: tracking_cost,
    2: claim_scaling,
    3: status_scaling,
    4: memory_per_record,
    5: pipeline_overhead,
    6: recovery_throughput,
}


def measure(number: int, bench: Bench, sizes: Sizes) -> list[Figure]:
    name = FIGURES[number].__name__.replace("_", " ")
    note(f"figure {number}: {name}")
    try:
        return FIGURES[number](bench, sizes)
    except Exception as exc:  # a figure that cannot be measured is reported, not fatal
        return [Figure(number, name, error=f"{type(exc).__name__}: {exc}")]


def table(figures: Sequence[Figure]) -> str:
    rows = [("#", "figure", "value", "target", "result")]
    for f in figures:
        verdict = "ERROR" if f.error else {True: "PASS", False: "MISS", None: "info"}[f.passed]
        value = f.error[:60] if f.error else f"{f.value:g}"
        rows.append((f.label, f.name, value, f.target or "-", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated figure numbers, e.g. 2,3")
    options = parser.parse_args(argv)
    chosen = [int(n) for n in options.only.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in chosen if n not in FIGURES]
    if unknown:
        parser.error(f"--only: no figure {unknown}; figures are 1 to {len(FIGURES)}")
    sizes = QUICK if options.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="docrecovery-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            redis_version = bench.client.info("server")["redis_version"]
            figures = [f for n in chosen for f in measure(n, bench, sizes)]
        finally:
            bench.close()
    wall = time.perf_counter() - started
    print(table(figures))
    print(f"\nwall time {wall:.0f} s, redis {redis_version}{' (--quick)' if options.quick else ''}")
    for f in figures:
        print(f"  {f.label}. {json.dumps(f.details)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "quick": options.quick,
        "wall_seconds": round(wall, 1),
        "redis_version": redis_version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sizes": asdict(sizes),
        "figures": [asdict(f) for f in figures],
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(REPO)}")
    return 1 if any(f.error for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
