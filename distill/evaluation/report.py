"""Evaluation reports: the terminal table and the JSON file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.atomic import write_json_atomic
from distill.evaluation.metrics import METRICS


@dataclass
class Report:
    dataset: str
    split: str
    metrics: dict[str, float]
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    model: str = ""
    rerank: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    precision: str = ""  # the encoder's: "fp32", "bf16" or "n/a (BM25)"; scores differ between them

    def to_json(self, per_query: bool = False) -> dict:
        out = {
            "dataset": self.dataset, "split": self.split, "model": self.model, "rerank": self.rerank,
            **{m: self.metrics[m] for m in METRICS},
            "num_queries": self.metrics["num_queries"], "precision": self.precision,
            "seconds": round(self.seconds, 3),
        }
        if self.by_type:
            out["by_type"] = self.by_type
        if per_query:
            out["per_query"] = self.per_query
        return out

    def write_json(self, path: str | Path, per_query: bool = True) -> None:
        write_json_atomic(path, self.to_json(per_query=per_query))

    def table(self) -> str:
        title = (f"{self.model}{' → ' + self.rerank if self.rerank else ''} on {self.dataset} ({self.split})"
                 f", precision {self.precision or 'unknown'}")
        rows = [("all", self.metrics)] + sorted(self.by_type.items())
        width = max(len(name) for name, _ in rows)
        head = f"{'':<{width}}  " + "  ".join(f"{m:>10}" for m in METRICS) + f"  {'queries':>7}"
        lines = [title, head]
        for name, m in rows:
            lines.append(f"{name:<{width}}  " + "  ".join(f"{100 * m[k]:>10.2f}" for k in METRICS)
                         + f"  {m['num_queries']:>7d}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
