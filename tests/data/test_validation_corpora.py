"""Issue 12 §3: an evaluation that measures nothing is an error; one grade rule for CapRetrieval and
BEIR; files that are not UTF-8 name file and line; a UTF-8 BOM is accepted."""
from __future__ import annotations

import pytest

from test_corpora import beir, caprt

from distill.data.corpora import DataError, load_retrieval_set

HEAD = "query-id\tcorpus-id\tscore\n"


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("qrels", ["", HEAD, HEAD + "\n\n"])
def test_empty_or_header_only_qrels_is_an_error(tmp_path, qrels):
    with pytest.raises(DataError, match=r"test.tsv: no judgements") as err:
        load_retrieval_set(beir(tmp_path, qrels=qrels))
    _one_line(err)


def test_split_without_a_relevant_query_cannot_be_evaluated(tmp_path):
    rs = load_retrieval_set(beir(tmp_path, qrels=HEAD + "q1\td1\t0\n"))
    with pytest.raises(DataError, match=r"split 'test' judges no query relevant"):
        rs.query_texts("test")


def test_capretrieval_all_positives_empty_is_an_error(tmp_path):
    queries = [{"id": "q1", "query": "a", "positives": []}, {"id": "q2", "query": "b", "positives": []}]
    with pytest.raises(DataError, match=r"queries.jsonl: positives: no query has a positive judgement"):
        load_retrieval_set(caprt(tmp_path, queries=queries))


def test_distill_evaluate_exits_2_and_writes_no_report(tmp_path, capsys):
    from distill.cli import main

    folder = beir(tmp_path, qrels=HEAD)
    out = tmp_path / "report.json"
    assert main(["evaluate", "--model", "bm25", "--dataset", str(folder), "--output", str(out), "--quiet"]) == 2
    assert "no judgements" in capsys.readouterr().err and not out.exists()


# the same values in both formats: (CapRetrieval JSON value, BEIR TSV text, expected grade or None = error)
GRADES = [
    (2, "2", 2), (0, "0", 0), (1.0, "1.0", 1),
    (1.7, "1.7", None), (-1, "-1", None), (float("inf"), "Infinity", None), (float("nan"), "NaN", None),
    (True, "true", None), ("2", "x", None),  # a JSON string is the wrong type
]


@pytest.mark.parametrize("json_value,tsv_text,expected", GRADES)
def test_one_grade_rule_for_both_formats(tmp_path, json_value, tsv_text, expected):
    queries = [{"id": "q1", "query": "red car", "positives": [{"id": "c2", "score": 1},
                                                              {"id": "c1", "score": json_value}]}]
    cap, bei = tmp_path / "c", tmp_path / "b"
    cap.mkdir(), bei.mkdir()
    cases = [(lambda: load_retrieval_set(caprt(cap, queries=queries)).qrels["test"]["q1"]["c1"],
              r"queries.jsonl:1: positives\[1\].score: expected an integer >= 0"),
             (lambda: load_retrieval_set(beir(bei, qrels=HEAD + "q2\td2\t1\n" + f"q1\td1\t{tsv_text}\n")
                                         ).qrels["test"]["q1"]["d1"],
              r"test.tsv:3: score: expected an integer >= 0")]
    for load, error in cases:
        if expected is None:
            with pytest.raises(DataError, match=error) as err:
                load()
            _one_line(err)
        else:
            assert load() == expected


def test_non_utf8_and_binary_files_name_file_and_line(tmp_path):
    root = beir(tmp_path)
    corpus = root / "corpus.jsonl"
    corpus.write_bytes(b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not UTF-8 text \(byte 0xe9") as err:
        load_retrieval_set(root)
    _one_line(err)
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\n\x00\x01\x02\xff\xfe\n")
    corpus.write_bytes(b'{"_id": "d1", "text": "ok"}\n')
    with pytest.raises(DataError, match=r"test.tsv:2: not UTF-8 text") as err:
        load_retrieval_set(root)
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\x00\td1\t1\n")
    with pytest.raises(DataError, match=r"test.tsv:2: binary data"):
        load_retrieval_set(root)


def test_utf8_bom_is_accepted_everywhere(tmp_path):
    clean = load_retrieval_set(beir(tmp_path / "a"))
    root = beir(tmp_path / "b")
    for path in (root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / "test.tsv"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    bom = load_retrieval_set(root)
    assert bom.qrels == clean.qrels and bom.corpus.to_list() == clean.corpus.to_list()
    assert bom.queries.to_list() == clean.queries.to_list()
    (tmp_path / "c").mkdir()
    cap = caprt(tmp_path / "c")
    (cap / "queries.jsonl").write_bytes(b"\xef\xbb\xbf" + (cap / "queries.jsonl").read_bytes())
    (cap / "types.json").write_bytes(b"\xef\xbb\xbf" + '{"colour": ["red car"]}'.encode())
    rs = load_retrieval_set(cap)
    assert rs.qrels["test"]["q1"] == {"c1": 2} and rs.types == {"colour": ["q1"]}


def test_duplicate_judgements_are_named(tmp_path):
    with pytest.raises(DataError, match=r"test.tsv:3: corpus-id: duplicate judgement of 'd1'"):
        load_retrieval_set(beir(tmp_path, qrels=HEAD + "q1\td1\t1\nq1\td1\t1\n"))
    queries = [{"id": "q1", "query": "x", "positives": [{"id": "c1"}, {"id": "c1"}]}]
    with pytest.raises(DataError, match=r"queries.jsonl:1: positives\[1\].id: duplicate document 'c1'"):
        load_retrieval_set(caprt(tmp_path, queries=queries))
