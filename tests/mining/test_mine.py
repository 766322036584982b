"""`distill mine` end to end on a tiny BEIR folder: tiny random teacher and student, real BM25."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from factories import make_tiny_bert
from factories import make_cross_encoder

from distill.data.corpora import DataError
from distill.data.lists import load_lists
from distill.mining.mine import MineConfig
from distill.mining.recipe import run_recipe

DOCS = ["the cat sat on the mat", "the dog sat on the mat", "a model of retrieval", "where did the dog go home",
        "what is a passage", "the cat went home", "a doc of the query", "the dog is a model"]


def tiny_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(DOCS)))
    queries = {"t1": "cat on the mat", "t2": "dog home", "e1": "retrieval model", "e2": "cat mat"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td0\t1\nt2\td3\t1\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ne1\td2\t1\ne2\td0\t1\n")
    return root


@pytest.fixture()
def recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    make_cross_encoder(tmp_path / "teacher")
    config = {
        "corpus": str(tiny_beir(tmp_path / "beir")), "output": str(tmp_path / "lists"), "seed": 0,
        "queries": {"split": "train", "passages": 8, "generate": {"keywords": {"language": "en", "per_passage": 1}}},
        "retrieval": {"bm25": True, "dense": str(make_tiny_bert(tmp_path / "student")), "depth": 8, "list_size": 4},
        "teacher": {"name": str(tmp_path / "teacher"), "batch_size": 8},
        "filter": {"source_top_k": None},
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_mine_writes_scored_lists_and_stats_and_reuses_everything(recipe, tmp_path):
    out = run_recipe(recipe)
    ds = load_lists(out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["queries_from_file"] == 2 and stats["lists"] == len(ds)
    rows = ds.to_list()
    assert {r["query_id"] for r in rows} >= {"t1", "t2"}
    assert not {"e1", "e2"} & {r["query_id"] for r in rows}  # evaluation queries never train
    for row in rows:
        assert len(row["candidates"]) == 4
        assert all(c["teacher_score"] is not None for c in row["candidates"])
        assert any(c["bm25_rank"] for c in row["candidates"]) and any(c["dense_rank"] for c in row["candidates"])
        if row["source_id"]:  # a synthetic query's source passage is always in its list
            assert row["source_id"] in [c["doc_id"] for c in row["candidates"]]
    assert {r["query_type"] for r in rows} == {"train", "keywords"}
    check = stats["label_check"]  # the train split's labelled queries, every ordering of their lists
    assert check["queries"] == 2 and set(check) >= {"teacher", "dense", "bm25", "fused", "teacher_minus_dense"}
    first = stats["teacher"]
    again = json.loads((run_recipe(recipe) / "stats.json").read_text())["teacher"]
    assert first["misses"] > 0 and again["misses"] == 0  # the warm cache scores nothing twice


def test_source_filter_keeps_only_teacher_top_k(recipe):
    raw = yaml.safe_load(recipe.read_text())
    raw["filter"] = {"source_top_k": 1}
    recipe.write_text(yaml.safe_dump(raw))
    out = run_recipe(recipe)
    for row in load_lists(out).to_list():
        if row["source_id"]:
            top = max(row["candidates"], key=lambda c: c["teacher_score"])
            assert top["doc_id"] == row["source_id"]


def test_bad_recipes_are_one_line_errors(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    with pytest.raises(ValueError, match="unknown keys colour"):
        MineConfig.from_dict({**raw, "colour": 1}, where="r.yaml")
    raw["queries"] = {"split": "test"}
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="test split is evaluation data"):
        run_recipe(recipe)
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad.yaml:\d+: malformed YAML"):
        run_recipe(bad)


def test_wrongly_typed_fields_are_named(recipe):
    raw = yaml.safe_load(recipe.read_text())
    for section, key, value in [("queries", "passages", "abc"), ("retrieval", "depth", "deep"),
                                ("teacher", "batch_size", True), ("filter", "source_top_k", 1.5)]:
        bad = {**raw, section: {**(raw.get(section) or {}), key: value}}
        with pytest.raises(ValueError) as err:
            MineConfig.from_dict(bad, where="r.yaml")
        assert str(err.value).startswith(f"r.yaml: {section}.{key}: expected int"), err.value
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^r.yaml: seed: expected int, got 'x'$"):
        MineConfig.from_dict({**raw, "seed": "x"}, where="r.yaml")
    with pytest.raises(ValueError, match=r"^r.yaml: retrieval: unknown keys dpeth"):
        MineConfig.from_dict({**raw, "retrieval": {"dpeth": 3}}, where="r.yaml")


@pytest.mark.parametrize("field, change", [
    ("corpus", {"corpus": "no-such-set"}),
    ("queries.generate", {"queries": {"generate": {"keyword": {}}}}),
    ("queries.generate.llm.model", {"queries": {"generate": {"llm": {"model": "no-such-llm"}}}}),
    ("retrieval.dense", {"retrieval": {"dense": "no-such-encoder"}}),
    ("teacher.name", {"teacher": {"name": "no-such-teacher"}}),
])
def test_every_name_is_checked_before_anything_runs(recipe, tmp_path, field, change):
    raw = yaml.safe_load(recipe.read_text())
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        run_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: {field}: "), err.value
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob(".lists.work*")) and not (tmp_path / "lists").exists()  # no stage ran
