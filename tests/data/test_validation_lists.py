"""Issue 12 §2: every lists source (saved dataset folders and JSONL) goes through one validator."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import Dataset

from factories import make_lists

from distill.data.corpora import DataError
from distill.data.lists import LIST_FEATURES, load_lists, save_lists


def _rows(tmp_path: Path) -> list[dict]:
    path = make_lists(tmp_path / "clean.jsonl", n_queries=6, list_size=3)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _saved(rows: list[dict], folder: Path) -> Path:
    Dataset.from_list(rows, features=LIST_FEATURES).save_to_disk(str(folder))
    return folder


def _jsonl(rows: list[dict], path: Path) -> Path:
    # allow_nan: Python's json writes inf/nan as Infinity/NaN, which it also reads
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mutate(rows, row, field, value):
    rows = json.loads(json.dumps(rows))
    if field.startswith("candidates"):
        if field == "candidates":
            rows[row]["candidates"] = value
        else:
            i, key = field[len("candidates["):].split("].")
            rows[row]["candidates"][int(i)][key] = value
    else:
        rows[row][field] = value
    return rows


BAD = [
    (2, "candidates[1].teacher_score", math.inf, "teacher_score"),
    (2, "candidates[1].teacher_score", -math.inf, "teacher_score"),
    (2, "candidates[1].teacher_score", 1e39, "teacher_score"),
    (2, "candidates[1].teacher_score", math.nan, "teacher_score"),
    (3, "candidates", [], "candidates: missing or empty list"),
    (3, "candidates", None, "candidates: missing or empty list"),  # found by the property test
    (1, "query", "   ", "query: missing or empty"),
    (4, "candidates[2].text", "", "candidates[2].text: missing or empty"),
    (4, "candidates[2].doc_id", None, "candidates[2].doc_id: missing or empty"),
    (5, "candidates[0].bm25_rank", 0, "candidates[0].bm25_rank"),
]


@pytest.mark.parametrize("row,field,value,expected", BAD)
@pytest.mark.parametrize("source", ["folder", "jsonl"])
def test_bad_lists_are_one_line_naming_row_and_field(tmp_path, source, row, field, value, expected):
    rows = _mutate(_rows(tmp_path), row, field, value)
    if source == "folder":
        path, where = _saved(rows, tmp_path / "lists"), f"[row {row}]"
    else:
        path, where = _jsonl(rows, tmp_path / "lists.jsonl"), f":{row + 1}:"
    with pytest.raises(DataError) as err:
        load_lists(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and where in message and expected in message, message


@pytest.mark.parametrize("source", ["folder", "jsonl"])
def test_duplicate_doc_id_in_one_list_is_named(tmp_path, source):
    rows = _rows(tmp_path)
    rows[3]["candidates"][2]["doc_id"] = rows[3]["candidates"][0]["doc_id"]
    path = _saved(rows, tmp_path / "l") if source == "folder" else _jsonl(rows, tmp_path / "l.jsonl")
    with pytest.raises(DataError, match=r"candidates\[2\]\.doc_id: duplicate document"):
        load_lists(path)


def test_null_score_means_unscored_and_loads(tmp_path):
    rows = _mutate(_rows(tmp_path), 0, "candidates[0].teacher_score", None)
    for path in (_saved(rows, tmp_path / "l"), _jsonl(rows, tmp_path / "l.jsonl")):
        ds = load_lists(path)
        assert ds[0]["candidates"][0]["teacher_score"] is None and len(ds) == 6


def test_clean_folder_and_jsonl_load_the_same(tmp_path):
    rows = _rows(tmp_path)
    a = load_lists(_jsonl(rows, tmp_path / "l.jsonl"))
    b = load_lists(save_lists(a, tmp_path / "saved"))
    assert a.to_list() == b.to_list()


def test_validator_is_vectorised_fast_on_large_folders(tmp_path):
    import time

    rows = _rows(tmp_path)
    many = [{**rows[i % 6], "query_id": f"q{i}"} for i in range(20_000)]
    folder = _saved(many, tmp_path / "big")
    start = time.perf_counter()
    load_lists(folder)
    assert time.perf_counter() - start < 5.0
