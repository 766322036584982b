import json
import time

import pytest

from distill.data.corpora import data_root
from distill.retrieval import trec
from distill.retrieval.bm25 import BM25Index, content_key

EN_DOCS = [
    ("d1", "The cat sat on the mat and purred."),
    ("d2", "Dogs chase cars down the busy street."),
    ("d3", "A modern gym with treadmills, weights and a swimming pool."),
    ("d4", "Recipe: bake the bread at 200 degrees for forty minutes."),
    ("d5", "The stock market fell sharply on Monday."),
]
ZH_DOCS = [
    ("z1", "图片展示了一家健身房，里面有跑步机和哑铃。"),
    ("z2", "一只猫在沙发上睡觉。"),
    ("z3", "今天天气很好，公园里有很多人。"),
    ("z4", "学校操场上学生们在踢足球。"),
]
SPECIAL_QUERIES = ['what is this?', 'cat (mat)', 'title:cat', '"unbalanced quote', 'wild*card', '?', '',
                   'AND OR NOT', 'a [TO b] {x} ~2 ^3 \\ / ! && || - +', '健身房？（跑步机）：']


@pytest.fixture(scope="module")
def en_index(tmp_path_factory):
    return BM25Index.open_or_build(EN_DOCS, tmp_path_factory.mktemp("bm25"), language="en")


@pytest.fixture(scope="module")
def zh_index(tmp_path_factory):
    return BM25Index.open_or_build(ZH_DOCS, tmp_path_factory.mktemp("bm25"), language="zh")


def test_obvious_match_ranks_first(en_index):
    hits = en_index.search(["where is the cat?", "gym with a pool", "stock markets falling"], k=3)
    assert [h[0][0] for h in hits] == ["d1", "d3", "d5"]
    for ranking in hits:
        scores = [s for _, s in ranking]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
        assert len(ranking) <= 3


def test_defaults_are_pyserinis(en_index):
    a = en_index.search(["cat on the mat"], k=5)
    b = en_index.search(["cat on the mat"], k=5, k1=0.9, b=0.4)
    c = en_index.search(["cat on the mat"], k=5, k1=1.2, b=0.75)
    assert a == b and a[0][0][0] == c[0][0][0] == "d1" and a[0][0][1] != c[0][0][1]


def test_chinese_analyzer_matches_chinese_query(zh_index):
    hits = zh_index.search(["健身房", "沙发上的猫", "踢足球的学生"], k=4)
    assert [h[0][0] for h in hits] == ["z1", "z2", "z4"]
    assert zh_index.language == "zh"


def test_special_characters_do_not_crash(en_index, zh_index):
    for index in (en_index, zh_index):
        hits = index.search(SPECIAL_QUERIES, k=2)
        assert len(hits) == len(SPECIAL_QUERIES)
        assert all(isinstance(d, str) and isinstance(s, float) for h in hits for d, s in h)
    assert en_index.search(["cat (mat): \"sat*\""], k=1)[0][0][0] == "d1"


def test_second_open_or_build_reuses_the_cache(tmp_path, monkeypatch):
    first = BM25Index.open_or_build(EN_DOCS, tmp_path, language="en")
    assert not first.from_cache
    monkeypatch.setattr(BM25Index, "_build", classmethod(lambda *a, **k: pytest.fail("rebuilt")))
    second = BM25Index.open_or_build(iter(EN_DOCS), tmp_path, language="en")
    assert second.from_cache and second.path == first.path
    assert second.search(["cat"], k=1) == first.search(["cat"], k=1)
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temp folders left behind


def test_content_key_depends_on_texts_ids_and_language():
    base = content_key(EN_DOCS, "en")
    assert base == content_key(list(EN_DOCS), "en")
    assert base != content_key(EN_DOCS, "zh")
    assert base != content_key([("d1", EN_DOCS[0][1] + "!")] + EN_DOCS[1:], "en")
    assert base != content_key([("x1", EN_DOCS[0][1])] + EN_DOCS[1:], "en")


def test_bad_input_is_refused_at_the_boundary(tmp_path, en_index):
    with pytest.raises(ValueError, match="duplicate doc_id 'd1'"):
        BM25Index.build([("d1", "a"), ("d1", "b")], tmp_path / "x")
    with pytest.raises(ValueError, match="unsupported BM25 language"):
        BM25Index.build(EN_DOCS, tmp_path / "x", language="klingon")
    with pytest.raises(ValueError, match="no documents"):
        BM25Index.build([], tmp_path / "x")
    with pytest.raises(FileExistsError):
        BM25Index.build(EN_DOCS, en_index.path)
    with pytest.raises(ValueError, match="k must be"):
        en_index.search(["cat"], k=0)


def test_empty_texts_are_skipped(tmp_path):
    index = BM25Index.build(EN_DOCS + [("blank", "   ")], tmp_path / "idx")
    assert index.num_docs == len(EN_DOCS)
    reopened = BM25Index.open(tmp_path / "idx")
    assert reopened.manifest == index.manifest


def test_trec_files_and_trec_eval(tmp_path):
    run = {"q1": [("d2", 1.0), ("d1", 3.25), ("d3", 2.0)], "q2": [("d9", 0.5)], "q3": [("d1", 1.0)]}
    run_path = trec.write_run(run, tmp_path / "r.run", tag="test")
    lines = run_path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 3.25000000 test"
    assert [l.split()[2] for l in lines[:3]] == ["d1", "d3", "d2"]
    qrels_path = trec.write_qrels({"q1": {"d1": 2, "d2": 1}, "q2": {"d4": 1}, "q4": {"d1": 1}}, tmp_path / "q.qrels")
    assert qrels_path.read_text().splitlines()[0] == "q1 0 d1 2"
    values = trec.trec_eval(qrels_path, run_path, "ndcg_cut.10")
    # q1: gains (2, 0, 1) vs ideal (2, 1): (2 + 1/2) / (2 + 1/log2(3)); q2 and q4 (no hits) score 0; q3 unjudged
    expected_q1 = (2 + 1 / 2) / (2 + 1 / 1.5849625)
    assert values["q1"] == pytest.approx(expected_q1, abs=1e-4)
    assert values["q2"] == 0.0 and values["q4"] == 0.0 and "q3" not in values
    assert values["all"] == pytest.approx(expected_q1 / 3, abs=1e-4)


def test_trec_writers_validate(tmp_path):
    with pytest.raises(ValueError, match="white space"):
        trec.write_run({"q 1": [("d1", 1.0)]}, tmp_path / "r", tag="t")
    with pytest.raises(ValueError, match="twice"):
        trec.write_run({"q1": [("d1", 1.0), ("d1", 0.5)]}, tmp_path / "r", tag="t")
    with pytest.raises(ValueError, match="relevance must be an int"):
        trec.write_qrels({"q1": {"d1": 1.5}}, tmp_path / "q")
    assert not (tmp_path / "r").exists() and not (tmp_path / "q").exists()


def _capretrieval_ndcg10(tmp_path, name: str, language: str) -> float:
    root = data_root() / "capretrieval" / name
    if not (root / "candidates.jsonl").is_file():
        pytest.skip(f"{root} not available")
    docs = [(d["id"], d["text"]) for d in map(json.loads, (root / "candidates.jsonl").open(encoding="utf-8"))]
    queries = [json.loads(line) for line in (root / "queries.jsonl").open(encoding="utf-8")]
    assert len(docs) == 3024 and len(queries) == 404
    start = time.perf_counter()
    index = BM25Index.open_or_build(docs, tmp_path / "cache", language=language)
    hits = index.search([q["query"] for q in queries], k=1000)
    elapsed = time.perf_counter() - start
    qrels = {q["id"]: {p["id"]: int(p["score"]) for p in q["positives"]} for q in queries if q["positives"]}
    run = {q["id"]: h for q, h in zip(queries, hits)}
    values = trec.trec_eval(trec.write_qrels(qrels, tmp_path / f"{name}.qrels"),
                            trec.write_run(run, tmp_path / f"{name}.run", tag="bm25"), "ndcg_cut.10")
    assert len(values) - 1 == len(qrels) == 377  # 27 queries without positives are left out
    ndcg = 100 * values["all"]
    print(f"\n{name} BM25 ({language}, k1=0.9 b=0.4) nDCG@10 = {ndcg:.2f}  (index + search {elapsed:.1f}s)")
    return ndcg


@pytest.mark.slow
def test_capretrieval_en_bm25_matches_reference(tmp_path):
    assert _capretrieval_ndcg10(tmp_path, "CapRetrievalEn", "en") == pytest.approx(71.98, abs=0.5)


@pytest.mark.slow
def test_capretrieval_zh_bm25_matches_reference(tmp_path):
    # Anserini's zh analyzer is Lucene's CJKAnalyzer (overlapping character bigrams).
    assert _capretrieval_ndcg10(tmp_path, "CapRetrieval", "zh") == pytest.approx(66.60, abs=1.0)
