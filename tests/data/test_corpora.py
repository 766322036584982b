import json
from pathlib import Path

import pytest

from distill.data.corpora import DataError, load_retrieval_set


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")


def beir(tmp_path, corpus=None, queries=None, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> Path:
    root = tmp_path / "beirset"
    (root / "qrels").mkdir(parents=True)
    write_jsonl(root / "corpus.jsonl", corpus if corpus is not None else [
        {"_id": "d1", "title": "Cats", "text": "cats purr"}, {"_id": "d2", "title": "", "text": "dogs bark"}])
    write_jsonl(root / "queries.jsonl", queries if queries is not None else [{"_id": "q1", "text": "purring"},
                                                                            {"_id": "q2", "text": "barking"}])
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def caprt(tmp_path, candidates=None, queries=None) -> Path:
    root = tmp_path / "cap"
    root.mkdir()
    write_jsonl(root / "candidates.jsonl", candidates if candidates is not None else [
        {"id": "c1", "text": "A Red  Car"}, {"id": "c2", "text": "a blue boat"}])
    write_jsonl(root / "queries.jsonl", queries if queries is not None else [
        {"id": "q1", "query": "red car", "positives": [{"id": "c1", "score": 2}]},
        {"id": "q2", "query": "nothing", "positives": []}])
    return root


def test_beir_folder_loads_into_common_schema(tmp_path):
    rs = load_retrieval_set(beir(tmp_path))
    assert rs.corpus.column_names == ["doc_id", "title", "text"]
    assert rs.queries.column_names == ["query_id", "text"]
    assert rs.qrels == {"test": {"q1": {"d1": 1}}}
    assert rs.doc_texts() == (["d1", "d2"], ["Cats cats purr", "dogs bark"])
    # only judged queries with a positive are evaluated
    assert rs.query_texts("test") == (["q1"], ["purring"])
    assert rs.normalize_text is False


def test_capretrieval_folder_keeps_graded_labels_and_excludes_unlabeled(tmp_path):
    rs = load_retrieval_set(caprt(tmp_path))
    assert rs.qrels["test"] == {"q1": {"c1": 2}, "q2": {}}
    assert rs.query_texts("test")[0] == ["q1"]
    assert rs.normalize_text is True


@pytest.mark.parametrize("rows, expected", [
    (['{"_id": "d1", "text": "x"', ], r"corpus.jsonl:1: malformed JSON"),
    ([{"text": "no id"}], r"corpus.jsonl:1: _id: missing"),
    ([{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}], r"corpus.jsonl:2: _id: duplicate id 'd1' \(first at line 1\)"),
    ([{"_id": "d1", "text": ""}], r"corpus.jsonl:1: text: empty"),
    ([], r"corpus.jsonl: empty corpus"),
])
def test_bad_corpus_is_one_line_naming_file_line_field(tmp_path, rows, expected):
    with pytest.raises(DataError, match=expected) as info:
        load_retrieval_set(beir(tmp_path, corpus=rows))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("qrels, expected", [
    ("query-id\tcorpus-id\tscore\nq9\td1\t1\n", r"test.tsv:2: query-id: unknown query 'q9'"),
    ("query-id\tcorpus-id\tscore\nq1\td9\t1\n", r"test.tsv:2: corpus-id: unknown document 'd9'"),
    ("query-id\tcorpus-id\tscore\nq1\td1\tx\n", r"test.tsv:2: score: expected an integer"),
    ("query-id\tcorpus-id\tscore\nq1\td1\n", r"test.tsv:2: expected 3 tab-separated fields"),
])
def test_bad_qrels(tmp_path, qrels, expected):
    with pytest.raises(DataError, match=expected):
        load_retrieval_set(beir(tmp_path, qrels=qrels))


def test_duplicate_query_and_unknown_positive(tmp_path):
    with pytest.raises(DataError, match=r"queries.jsonl:2: _id: duplicate id 'q1'"):
        load_retrieval_set(beir(tmp_path, queries=[{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]))
    with pytest.raises(DataError, match=r"queries.jsonl:1: positives\[0\].id: unknown document 'zz'"):
        load_retrieval_set(caprt(tmp_path, queries=[{"id": "q1", "query": "x", "positives": [{"id": "zz"}]}]))


def test_unknown_name_says_where_data_is_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"data set 'scifact' not found: expected at .*beir/scifact .*published at"):
        load_retrieval_set("scifact")
    with pytest.raises(DataError, match="neither a known data set"):
        load_retrieval_set("no-such-set")


def test_named_sets_resolve_from_shared_data():
    rs = load_retrieval_set("capretrieval")
    assert len(rs.corpus) == 3024 and len(rs.queries) == 404
    assert rs.language == "zh"
    assert len(rs.query_texts("test")[0]) == 404 - 27
    # types.json joins conjunctions with '+'; they still map onto the queries
    assert sum(len(v) for v in rs.types.values()) == 407 - 4
    en = load_retrieval_set("capretrieval-en")
    assert en.language == "en" and en.qrels == rs.qrels
    # the English set borrows the Chinese type lists through the shared ids
    assert en.types == rs.types
    sf = load_retrieval_set("scifact")
    assert len(sf.corpus) == 5183 and set(sf.splits) == {"train", "test"}
    assert len(sf.query_texts("test")[0]) == 300
