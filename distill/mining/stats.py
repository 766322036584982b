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


def query_type_table(per_type: dict[str, dict]) -> str:
    """``stats.json``'s ``per_query_type`` as a plain-text table, one row per type plus a total;
    the columns are the funnel: generated, mined, passing each filter, kept ("-": not applicable)."""
    columns = ["generated", "mined"]
    for row in per_type.values():
        columns += [c for c in row if c not in columns and c != "kept"]
    columns.append("kept")
    total = {c: sum(r.get(c) or 0 for r in per_type.values()) for c in columns}
    body = [[t] + [_cell(r.get(c)) for c in columns] for t, r in per_type.items()]
    body.append(["total"] + [_cell(total[c]) for c in columns])
    header = ["query type"] + columns
    widths = [max(len(str(x[i])) for x in [header] + body) for i in range(len(header))]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(line, widths)))
             for line in [header] + body]
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:,}"
