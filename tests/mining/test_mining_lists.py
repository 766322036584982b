"""Richer training lists: candidates from the student's own top-k, the CADET student + teacher filter
funnel with per-type counts, and incremental mining (a new query type or more captions scores only
the new pairs). Tiny random teacher and student, real BM25, a tiny BEIR folder."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from factories import make_tiny_bert
from test_mine import tiny_beir
from factories import make_cross_encoder

from distill.data.lists import load_lists
from distill.mining import mine as mine_module
from distill.mining.mine import MineConfig
from distill.mining.recipe import run_recipe
from distill.mining.stats import query_type_table


@pytest.fixture()
def base(tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    make_cross_encoder(tmp_path / "teacher")
    return {
        "corpus": str(tiny_beir(tmp_path / "beir")), "output": str(tmp_path / "lists"), "seed": 0,
        "queries": {"passages": 8, "generate": {"keywords": {"language": "en", "per_passage": 2}}},
        # the zero-shot student's own top-k: no BM25, the dense model's run alone
        "retrieval": {"bm25": False, "dense": str(make_tiny_bert(tmp_path / "student")), "depth": 4,
                      "list_size": 4},
        "teacher": {"name": str(tmp_path / "teacher"), "batch_size": 8,
                    "cache": str(tmp_path / "scores.sqlite")},
        "filter": {"source_top_k": None},
    }


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def pairs_of(out: Path) -> set[tuple[str, str]]:
    return {(r["query"], c["text"]) for r in load_lists(out).to_list() for c in r["candidates"]}


def test_lists_from_the_students_own_top_k(base, tmp_path):
    out = run_recipe(write(tmp_path, base))
    rows = load_lists(out).to_list()
    assert rows
    for row in rows:
        ranks = [c["dense_rank"] for c in row["candidates"]]
        assert all(c["bm25_rank"] is None for c in row["candidates"])
        assert len(ranks) == 4 and row["source_id"] in [c["doc_id"] for c in row["candidates"]]
        retrieved = [r for r in ranks if r is not None]
        assert retrieved == sorted(retrieved)  # the list is the student's own ranking


def test_student_and_teacher_filters_run_as_a_funnel_with_per_type_counts(base, tmp_path, capsys):
    base["filter"] = {"source_in_student_top_k": 2, "source_top_k": 1}
    base["retrieval"]["list_size"] = 3
    out = run_recipe(write(tmp_path, base))
    stats = json.loads((out / "stats.json").read_text())
    rows = load_lists(out).to_list()
    for row in rows:  # every kept query passed both filters
        source = next(c for c in row["candidates"] if c["doc_id"] == row["source_id"])
        assert source["dense_rank"] is not None and source["dense_rank"] <= 2
        assert max(row["candidates"], key=lambda c: c["teacher_score"])["doc_id"] == row["source_id"]
    funnel = stats["per_query_type"]["keywords"]
    assert list(funnel) == ["generated", "mined", "source_in_student_top_k", "source_top_k", "kept"]
    assert funnel["generated"] == stats["queries_generated"]
    assert funnel["generated"] >= funnel["mined"] >= funnel["source_in_student_top_k"] \
        >= funnel["source_top_k"] == funnel["kept"] == len(rows)
    assert funnel["mined"] > funnel["source_in_student_top_k"] > 0  # the student filter did drop some
    assert stats["filtered"] == {"source_not_in_student_top_k": funnel["mined"] - funnel["source_in_student_top_k"],
                                 "source_not_in_teacher_top_k": funnel["source_in_student_top_k"] - funnel["kept"]}
    # a query the student filter drops is never sent to the teacher
    assert stats["teacher"]["pairs"] == 3 * funnel["source_in_student_top_k"]
    printed = capsys.readouterr().out
    assert query_type_table(stats["per_query_type"]) in printed
    header, keywords_line, total = printed.strip().splitlines()[-3:]
    assert header.split() == ["query", "type", "generated", "mined", "source_in_student_top_k", "source_top_k", "kept"]
    assert keywords_line.split() == ["keywords", *(str(v) for v in funnel.values())]
    assert total.split()[0] == "total"


def test_student_filter_needs_a_student_run_deep_enough(base):
    with pytest.raises(ValueError, match=r"^r.yaml: filter.source_in_student_top_k: needs a student run"):
        MineConfig.from_dict({**base, "retrieval": {"bm25": True, "dense": None},
                              "filter": {"source_in_student_top_k": 2}}, where="r.yaml")
    with pytest.raises(ValueError, match=r"^r.yaml: filter.source_in_student_top_k: 20 is deeper than "
                                         r"retrieval.depth \(4\)"):
        MineConfig.from_dict({**base, "filter": {"source_in_student_top_k": 20}}, where="r.yaml")
    with pytest.raises(ValueError, match=r"^r.yaml: filter.source_in_student_top_k: expected int"):
        MineConfig.from_dict({**base, "filter": {"source_in_student_top_k": "20"}}, where="r.yaml")


def test_per_type_table_for_queries_from_a_qrels_split(base, tmp_path):
    base["queries"]["split"] = "train"
    base["retrieval"]["bm25"] = True
    out = run_recipe(write(tmp_path, base))
    per_type = json.loads((out / "stats.json").read_text())["per_query_type"]
    assert per_type["train"] == {"generated": None, "mined": 2, "kept": 2}
    assert "train" in query_type_table(per_type) and " - " in query_type_table(per_type)


def rows_in_cache(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]


def test_adding_a_query_type_or_captions_scores_only_the_new_pairs(base, tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []  # (generator, passages) per generate call
    for module, cls in (("keywords", "KeywordGenerator"), ("keyphrases", "KeyBERTGenerator")):
        klass = getattr(__import__(f"distill.mining.queries.{module}", fromlist=[cls]), cls)
        original = klass.generate

        def counted(self, passages, _original=original, _name=cls):
            calls.append((_name, len(passages)))
            return _original(self, passages)
        monkeypatch.setattr(klass, "generate", counted)
    cache = Path(base["teacher"]["cache"])
    base["queries"]["passages"] = 5

    first = run_recipe(write(tmp_path, base))
    first_pairs, first_stats = pairs_of(first), json.loads((first / "stats.json").read_text())
    assert first_stats["teacher"]["forward_pairs"] == len(first_pairs) == rows_in_cache(cache)
    assert calls == [("KeywordGenerator", 5)]

    # a second query type: only its queries' pairs reach the teacher, the keywords are not regenerated
    base["queries"]["generate"]["keybert"] = {"model": base["retrieval"]["dense"], "per_passage": 1}
    second = run_recipe(write(tmp_path, base))
    second_pairs, second_stats = pairs_of(second), json.loads((second / "stats.json").read_text())
    assert set(second_stats["per_query_type"]) == {"keywords", "keybert"}
    assert first_pairs < second_pairs
    new = second_pairs - first_pairs
    assert second_stats["teacher"]["forward_pairs"] == len(new) > 0
    assert rows_in_cache(cache) == len(second_pairs)
    assert calls == [("KeywordGenerator", 5), ("KeyBERTGenerator", 5)]

    # more captions: the first five stay picked; only the three new ones are generated and scored
    base["queries"]["passages"] = 8
    third = run_recipe(write(tmp_path, base))
    third_pairs, third_stats = pairs_of(third), json.loads((third / "stats.json").read_text())
    assert second_pairs < third_pairs
    assert third_stats["teacher"]["forward_pairs"] == len(third_pairs - second_pairs) > 0
    assert sorted(calls[2:]) == [("KeyBERTGenerator", 3), ("KeywordGenerator", 3)]

    # nothing new: nothing generated, nothing scored
    assert json.loads((run_recipe(write(tmp_path, base)) / "stats.json").read_text())["teacher"]["forward_pairs"] == 0
    assert len(calls) == 4


def test_picking_more_passages_keeps_the_earlier_ones(base):
    from distill.data.corpora import load_retrieval_set

    rs = load_retrieval_set(base["corpus"])
    small, large = (mine_module.pick_passages(rs, n, seed=3) for n in (3, 6))
    assert len(small) == 3 and len(large) == 6 and set(small) < set(large)
    assert mine_module.pick_passages(rs, 3, seed=3) == small
