"""Issue 12 §4: an unwritable --output, --run-file or trainer.default_root_dir is one line before
any work starts (the data set named below does not even exist: the output check comes first)."""
from __future__ import annotations

import pytest

from distill.cli import main


@pytest.fixture
def places(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"dir": tmp_path, "under_file": a_file / "report.json", "file": a_file}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("distill: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # (Lightning may log "Seed set" first)
    return errors[0]


@pytest.mark.parametrize("flag", ["--output", "--run-file"])
def test_evaluate_checks_its_outputs_first(places, capsys, flag):
    base = ["evaluate", "--model", "bm25", "--dataset", str(places["dir"] / "no-such-set")]
    assert main(base + [flag, str(places["dir"])]) == 2
    assert f"{flag} {places['dir']}: is a directory, expected a file" in _error(capsys)
    assert main(base + [flag, str(places["under_file"])]) == 2
    assert f"{places['file']} is a file, not a folder" in _error(capsys)
    assert main(base + [flag, "/proc/distill-report.json"]) == 2  # a place nobody may create files
    assert "cannot write in /proc" in _error(capsys)


def test_mine_checks_its_output_first(places, capsys):
    assert main(["mine", "--config", str(places["dir"] / "no-such.yaml"), "--output", str(places["file"])]) == 2
    assert "--output" in _error(capsys)


def test_fit_checks_default_root_dir_before_anything(places, capsys):
    assert main(["fit", "--data.lists", str(places["dir"] / "no-such.jsonl"),
                 "--trainer.default_root_dir", str(places["file"])]) == 2
    assert f"trainer.default_root_dir {places['file']}: is a file, expected a folder" in _error(capsys)
