"""Each benchmark's rows, kept for `benchmarks/report.py` to print as one table (`make bench`).

    from benchmarks.record import Row, save
    save("training", [Row("ours (length buckets)", 7.1, "lists/s", baseline="padded", ratio=3.2,
                          gflops=410.0, peak_gflops=1950.0, precision="bf16")], notes=["..."])

A row's ratio is against the baseline named beside it, measured in the same run; the fraction of
peak is useful GFLOP/s (real token counts, no padding) over the matmul peak of the row's precision
measured in the same run. Results go to benchmarks/results/<bench>.json (not committed: they are
this machine's; the README keeps the table with the command and the date).
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    path: str                      # what was timed
    rate: float                    # in `unit`
    unit: str                      # lists/s, pairs/s, texts/s, s
    baseline: str | None = None    # the row this one is compared with (same bench, same run)
    ratio: float | None = None     # rate / baseline's rate (or baseline time / this time)
    gflops: float | None = None    # useful GFLOP/s
    peak_gflops: float | None = None
    precision: str = "fp32"
    note: str = ""

    @property
    def of_peak(self) -> float | None:
        return self.gflops / self.peak_gflops if self.gflops and self.peak_gflops else None


def save(bench: str, rows: list[Row], notes: list[str] | None = None) -> Path:
    """Write benchmarks/results/<bench>.json atomically (a killed benchmark leaves the old one whole)."""
    import torch

    RESULTS.mkdir(exist_ok=True)
    record = {"bench": bench, "when": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "load_average": round(os.getloadavg()[0], 2), "notes": notes or [],
              "rows": [asdict(r) for r in rows]}
    path = RESULTS / f"{bench}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, prefix=f".{bench}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(tmp, path)
    return path


def load_all() -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(RESULTS.glob("*.json"))]
