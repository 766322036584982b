"""Print every benchmark's last result as one markdown table (the README keeps it).

Run: .venv/bin/python benchmarks/report.py   (`make bench` runs every benchmark, then this)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import RESULTS, Row, load_all  # noqa: E402


def table(records: list[dict]) -> str:
    lines = ["| bench | path | precision | rate | vs baseline | useful GFLOP/s | of peak |",
             "|---|---|---|---:|---|---:|---:|"]
    for record in records:
        for raw in record["rows"]:
            row = Row(**raw)
            versus = f"{row.ratio:.2f}x {row.baseline}" if row.ratio is not None and row.baseline else "-"
            gflops = f"{row.gflops:.1f}" if row.gflops else "-"
            peak = f"{row.of_peak:.1%} of {row.peak_gflops:.0f}" if row.of_peak is not None else "-"
            lines.append(f"| {record['bench']} | {row.path}{' — ' + row.note if row.note else ''} | {row.precision} | "
                         f"{row.rate:.2f} {row.unit} | {versus} | {gflops} | {peak} |")
    return "\n".join(lines)


def main() -> None:
    records = load_all()
    if not records:
        sys.exit(f"no benchmark results in {RESULTS}: run `make bench` (or a benchmarks/bench_*.py) first")
    print(table(records))
    for record in records:
        head = (f"{record['bench']}: {record['when']}, torch {record['torch']}, {record['threads']} threads, "
                f"1-min load {record['load_average']}")
        print("\n".join([f"- {head}", *[f"  - {n}" for n in record["notes"]]]))


if __name__ == "__main__":
    main()
