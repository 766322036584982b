"""The notebooks run top to bottom on small reports made here and print what they promise."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def _report(path: Path, by_type: dict[str, float]) -> Path:
    per_query = {f"{t}-{i}": {"ndcg@10": v, "recall@100": v, "mrr@10": v} for t, v in by_type.items() for i in range(10)}
    mean = sum(by_type.values()) / len(by_type)
    path.write_text(json.dumps({
        "dataset": "capretrieval", "ndcg@10": mean, "recall@100": mean, "mrr@10": mean, "num_queries": len(per_query),
        "by_type": {t: {"ndcg@10": v, "recall@100": v, "mrr@10": v, "num_queries": 10} for t, v in by_type.items()},
        "per_query": per_query}))
    return path


def test_ablation_report_notebook(tmp_path, monkeypatch):
    a = _report(tmp_path / "zero.json", {"singleton_object": 0.80, "complex_condition": 0.40})
    b = _report(tmp_path / "dist.json", {"singleton_object": 0.82, "complex_condition": 0.55})
    figure = tmp_path / "fig" / "by_type.png"
    monkeypatch.setenv("DISTILL_REPORTS", f"{a} {b}")
    monkeypatch.setenv("DISTILL_REPORT_NAMES", "zero-shot distilled")
    monkeypatch.setenv("DISTILL_FIGURE", str(figure))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(ROOT / "notebooks" / "ablation_report.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "2 reports on capretrieval: zero-shot, distilled" in text
    row = next(line for line in text.splitlines() if line.startswith("complex_condition"))
    assert row.split()[-1] == "+15.00"  # the fine-grained type gained 15 points
    assert figure.is_file() and figure.stat().st_size > 1000
