"""Issue 12 §7: evaluation is fp32 unless bf16 is chosen, and every report states its precision."""
from __future__ import annotations

import json

import pytest

from factories import make_tiny_bert
from test_corpora import beir

from distill.cli import main
from distill.evaluation.evaluate import evaluate_encoder


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.mark.parametrize("flag, expected", [([], "fp32"), (["--precision", "bf16"], "bf16"),
                                            (["--precision", "fp32"], "fp32")])
def test_distill_evaluate_defaults_to_fp32_and_says_so(bert, tmp_path, capsys, flag, expected):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(bert), "--dataset", str(beir(tmp_path)), "--output", str(out),
                 "--quiet", *flag]) == 0
    assert json.loads(out.read_text())["precision"] == expected
    assert f"precision {expected}" in capsys.readouterr().out.splitlines()[0]


def test_bm25_report_states_that_precision_does_not_apply(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", "bm25", "--dataset", str(beir(tmp_path)), "--output", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["precision"] == "n/a (BM25)"


def test_evaluation_inside_training_is_fp32_whatever_the_student_trains_in(bert, tmp_path):
    from students import load_student

    student = load_student(str(bert), bf16=True)  # as under bf16-mixed training on bf16 hardware
    folder = str(beir(tmp_path))
    report = evaluate_encoder(student, folder)
    assert report.precision == "fp32" and report.to_json()["precision"] == "fp32"
    assert student.bf16 is True  # the training setting is restored
    assert evaluate_encoder(student, folder, precision="bf16").precision == "bf16"
