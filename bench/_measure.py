"""What every benchmark here does alike: latency summaries, error text, fair rotation, the results files.

Standard library only: the async benchmark also loads this next to asyncmcp in its own venv.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass
class LatencySummary:
    count: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> LatencySummary:
        values = sorted(samples)
        return cls(
            count=len(values),
            median_ms=ms(statistics.median(values)),
            p95_ms=ms(percentile(values, 95)),
            p99_ms=ms(percentile(values, 99)),
            mean_ms=ms(statistics.fmean(values)),
            min_ms=ms(values[0]),
            max_ms=ms(values[-1]),
        )

    @classmethod
    def maybe(cls, samples: Sequence[float]) -> LatencySummary | None:
        return cls.of(samples) if samples else None


def cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) time of all CPUs since boot, in jiffies, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = sum(fields[3:5])  # idle and iowait
    return sum(fields) - idle, sum(fields)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(error_text(inner) for inner in exc.exceptions)
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text}"[:500]


def rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` started at position `by`: each round begins with a different target, so no target always
    runs first (or last) on a machine whose load drifts."""
    if not items:
        return []
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def write_report(out: Path, name: str, report: Mapping[str, object]) -> None:
    """`out/NAME.json` (every figure) and `out/NAME.md` (the tables, also printed)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2) + "\n")
    md_path.write_text(str(report["markdown"]))
    print(report["markdown"])
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
