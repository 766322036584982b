"""Summaries written to a mining or transfer run's ``stats.json``."""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Hashable, Iterable


def summary(values: list[float]) -> dict:
    """mean, median, 10th percentile, min and max ({} for no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {"mean": statistics.mean(values), "median": statistics.median(values),
            "p10": ordered[int(0.1 * (len(ordered) - 1))], "min": ordered[0], "max": ordered[-1]}


def count(items: Iterable[Hashable]) -> dict:
    """How often each item occurs, in first-seen order."""
    return dict(Counter(items))
