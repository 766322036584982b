"""The one table `make bench` prints: rows saved by each benchmark, read back and rendered."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import record, report  # noqa: E402
from benchmarks.peak import encoder_flops  # noqa: E402


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    return tmp_path


def test_saved_rows_render_with_ratio_and_fraction_of_peak(results):
    record.save("training", [
        record.Row("ours", 8.0, "lists/s", baseline="padded", ratio=3.2, gflops=500.0, peak_gflops=2000.0,
                   precision="bf16"),
        record.Row("padded", 2.5, "lists/s", baseline="ours", ratio=2.5 / 8.0, precision="bf16"),
    ], notes=["batch 16"])
    saved = json.loads((results / "training.json").read_text())
    assert [r["path"] for r in saved["rows"]] == ["ours", "padded"] and saved["notes"] == ["batch 16"]
    assert not list(results.glob(".*.tmp"))  # written through a temporary file, none left behind
    text = report.table(record.load_all())
    ours_line = next(line for line in text.splitlines() if "| ours |" in line)
    assert "8.00 lists/s" in ours_line and "3.20x padded" in ours_line and "25.0% of 2000" in ours_line
    padded_line = next(line for line in text.splitlines() if "| padded |" in line)
    assert "0.31x ours" in padded_line and padded_line.endswith("| - | - |")


def test_report_without_results_says_what_to_run(results, capsys):
    with pytest.raises(SystemExit, match="make bench"):
        report.main()


def test_encoder_flops_counts_weights_and_attention_per_real_token():
    class Config:
        hidden_size, intermediate_size, num_hidden_layers = 4, 8, 2

    # per token 2·layers·(4H² + 2HI) = 2·2·(64 + 64) = 512; attention 4·layers·H·ΣL² = 32·(9 + 1)
    assert encoder_flops(Config, [3, 1]) == 512 * 4 + 32 * 10
    assert encoder_flops(Config, [3, 1], backward=True) == 3 * (512 * 4 + 32 * 10)
