"""`distill compare`: evaluation reports side by side, with paired significance against the first.

Each report is a JSON written by `distill evaluate --output` (it carries per-query scores). The
test is a two-sided paired randomisation (sign-flip) test on per-query nDCG@10 over the queries
both reports scored, as is customary in IR (Smucker et al. 2007).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from distill.evaluation.metrics import METRICS


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_report(path: str | Path) -> dict:
    """One `distill evaluate --output` report, checked: every problem is one line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a `distill evaluate --output` JSON report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such report") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (not a `distill evaluate --output` report)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path}: expected a JSON object (a `distill evaluate --output` report), "
                         f"got {type(report).__name__}")
    for key in (*METRICS, "num_queries"):
        if key not in report:
            raise ValueError(f"{path}: {key}: missing (not a `distill evaluate --output` report)")
        if not _number(report[key]):
            raise ValueError(f"{path}: {key}: expected a finite number, got {report[key]!r}")
    per_query = report.get("per_query", {})
    if not isinstance(per_query, dict):
        raise ValueError(f"{path}: per_query: expected an object of query id → metrics")
    for qid, scores in per_query.items():
        if not isinstance(scores, dict) or not all(_number(scores.get(m)) for m in METRICS):
            raise ValueError(f"{path}: per_query.{qid}: expected {', '.join(METRICS)} as finite numbers, got {scores!r}")
    return report


def _same_data(reports: list[dict], paths: list) -> None:
    """Scores of different data sets or splits are not comparable: refuse, naming both."""
    def what(r: dict) -> str:
        return f"{r.get('dataset', '?')} ({r.get('split', '?')})"

    base = reports[0]
    for path, report in zip(paths[1:], reports[1:]):
        for key in ("dataset", "split"):
            if key in base and key in report and base[key] != report[key]:
                raise ValueError(f"{paths[0]} is {what(base)} but {path} is {what(report)}: "
                                 "compare reports of one data set and split")


def paired_randomization(a: list[float], b: list[float], trials: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value that mean(b - a) is 0, flipping the sign of each paired difference."""
    diffs = [y - x for x, y in zip(a, b)]
    if not diffs:
        return 1.0
    observed = abs(sum(diffs))
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed - 1e-12
               for _ in range(trials))
    return (hits + 1) / (trials + 1)


def load_reports(paths: list[str | Path], names: list[str] | None, metric: str) -> tuple[list[dict], list[str]]:
    """The reports and their display names (file stems unless given), checked against ``metric``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    reports = [load_report(p) for p in paths]
    _same_data(reports, list(paths))
    names = list(names or [Path(p).stem for p in paths])
    if len(names) != len(reports):
        raise ValueError(f"{len(names)} names for {len(reports)} reports")
    return reports, names


def by_type(paths: list[str | Path], names: list[str] | None = None, metric: str = "ndcg@10") -> str:
    """One row per query type (CapRetrieval's ``types.json``: the granularity of what a query asks
    for), one column per report, and each later report's change against the first."""
    reports, names = load_reports(paths, names, metric)
    types = sorted({t for r in reports for t in r.get("by_type", {})})
    if not types:
        raise ValueError(f"{paths[0]}: by_type: missing (the data set has no query types)")
    tw = max(len(t) for t in types + ["type"])
    cw = max(10, *(len(n) for n in names))
    lines = [f"{'type':<{tw}}  {'queries':>7}  " + "  ".join(f"{n:>{cw}}" for n in names)
             + "".join(f"  {'Δ ' + n:>{cw + 2}}" for n in names[1:])]
    for t in types:
        cells = [r.get("by_type", {}).get(t) for r in reports]
        count = next((c["num_queries"] for c in cells if c), 0)
        values = [100 * c[metric] if c else float("nan") for c in cells]
        lines.append(f"{t:<{tw}}  {count:>7d}  " + "  ".join(f"{v:>{cw}.2f}" for v in values)
                     + "".join(f"  {v - values[0]:>+{cw + 2}.2f}" for v in values[1:]))
    return "\n".join(lines)


def compare(paths: list[str | Path], names: list[str] | None = None, metric: str = "ndcg@10") -> str:
    reports, names = load_reports(paths, names, metric)
    base = reports[0]
    width = max(len(n) for n in names)
    lines = [f"{'':<{width}}  " + "  ".join(f"{m:>10}" for m in METRICS) + f"  {'Δ ' + metric:>10}  {'p':>7}"]
    for name, report in zip(names, reports):
        row = f"{name:<{width}}  " + "  ".join(f"{100 * report[m]:>10.2f}" for m in METRICS)
        if report is base:
            row += f"  {'':>10}  {'':>7}"
        else:
            delta = 100 * (report[metric] - base[metric])
            shared = sorted(set(base.get("per_query", {})) & set(report.get("per_query", {})))
            p = paired_randomization([base["per_query"][q][metric] for q in shared],
                                     [report["per_query"][q][metric] for q in shared]) if shared else float("nan")
            row += f"  {delta:>+10.2f}  {p:>7.4f}"
        lines.append(row)
    return "\n".join(lines)
