"""English lists → Chinese lists through shared ids (distill/mining/transfer.py), on tiny parallel folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from factories import make_tiny_bert

from distill.data.corpora import DataError, load_retrieval_set
from distill.data.lists import lists_from_rows, load_lists, save_lists
from distill.mining.recipe import run_recipe
from distill.mining.queries.keywords import KeywordConfig, keyword_spans
from distill.mining.transfer import TransferConfig, transfer_rows

EN = {"cr.0": "The image shows a gas meter installed on the wall, with pipes and a power adapter next to it.",
      "cr.1": "This is a marriage certificate with the couple's photo, names, gender and age.",
      "cr.2": "A cat sits on a mat.",
      "cr.3": "Of it."}
ZH = {"cr.0": "图片中显示了一个安装在墙上的燃气表，旁边有管道和电源适配器。",
      "cr.1": "这是一张结婚证书，包含新婚夫妇的照片、姓名、性别、年龄。",
      "cr.2": "一只猫坐在垫子上。",
      "cr.3": "的了吗"}           # no keyword span at all


def capretrieval_folder(root: Path, texts: dict[str, str], query: str) -> Path:
    root.mkdir(parents=True)
    (root / "candidates.jsonl").write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                                   for i, t in texts.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text(json.dumps({"id": "e1", "query": query, "positives": [{"id": "cr.2", "score": 2}]},
                                                   ensure_ascii=False) + "\n", encoding="utf-8")
    return root


def row(qid: str, query: str, source: str, docs: list[str], qtype: str = "keywords") -> dict:
    return {"query_id": qid, "query": query, "query_type": qtype, "source_id": source,
            "candidates": [{"doc_id": d, "text": EN[d], "teacher_score": 5.0 - 2.5 * k, "bm25_rank": k + 1,
                            "dense_rank": None if k else 1} for k, d in enumerate(docs)]}


EN_ROWS = [
    row("gen-a", "Power Adapter", "cr.0", ["cr.0", "cr.2", "cr.1"]),   # → 电源适配器 (not the top keyword 燃气表)
    row("gen-b", "marriage certificate", "cr.1", ["cr.1", "cr.0"]),    # → 结婚证书
    row("gen-c", "spaceship", "cr.2", ["cr.2", "cr.1"]),               # nothing close: dropped
    row("t1", "cat on a mat", "", ["cr.2", "cr.0"], qtype="train"),     # no source: dropped
    row("gen-d", "nothing", "cr.3", ["cr.3", "cr.0"]),                  # no Chinese span: dropped
]


class FakeEncoder:
    """One-hot directions: each English query shares a direction with exactly one Chinese span (or none)."""

    def __init__(self, pairs: dict[str, str | None]):
        texts = list(pairs) + [v for v in pairs.values() if v]
        self.direction = {t: k for k, t in enumerate(dict.fromkeys(texts))}
        self.direction.update({zh: self.direction[en] for en, zh in pairs.items() if zh})
        self.dim = len(self.direction) + 1
        self.seen: list[str] = []

    def encode_queries(self, texts: list[str]) -> torch.Tensor:
        self.seen += texts
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            out[i, self.direction.get(t, self.dim - 1)] = 3.0  # unknown spans share one unrelated direction
        return out


# texts reach the encoder CapRetrieval-normalised (lower-cased, white space collapsed)
PAIRS = {"power adapter": "电源适配器", "marriage certificate": "结婚证书", "spaceship": None, "nothing": None}


@pytest.fixture()
def sets(tmp_path):
    en = capretrieval_folder(tmp_path / "CapRetrievalEn", EN, "cat")
    zh = capretrieval_folder(tmp_path / "CapRetrieval", ZH, "猫")
    return en, zh


def test_candidates_become_chinese_scores_kept_query_is_the_closest_span(sets):
    zh = load_retrieval_set(sets[1])
    assert "燃气表" in keyword_spans(ZH["cr.0"], KeywordConfig())  # a competitor the encoder must beat
    encoder = FakeEncoder(PAIRS)
    out, stats = transfer_rows([dict(r) for r in EN_ROWS], zh, encoder, min_similarity=0.5)
    assert "power adapter" in encoder.seen  # normalised as CapRetrieval's evaluation does
    by_id = {r["query_id"]: r for r in out}
    assert set(by_id) == {"gen-a", "gen-b"}
    assert by_id["gen-a"]["query"] == "电源适配器" and by_id["gen-b"]["query"] == "结婚证书"
    for new in out:
        old = next(r for r in EN_ROWS if r["query_id"] == new["query_id"])
        assert new["source_id"] == old["source_id"] and new["query_type"] == old["query_type"]
        assert [c["doc_id"] for c in new["candidates"]] == [c["doc_id"] for c in old["candidates"]]
        assert [c["teacher_score"] for c in new["candidates"]] == [c["teacher_score"] for c in old["candidates"]]
        assert [c["bm25_rank"] for c in new["candidates"]] == [c["bm25_rank"] for c in old["candidates"]]
        assert [c["text"] for c in new["candidates"]] == [ZH[c["doc_id"]] for c in new["candidates"]]
    assert stats["lists_in"] == 5 and stats["lists_out"] == 2
    assert stats["dropped_low_similarity"] == 1          # spaceship: best cosine 0
    assert stats["dropped_without_source"] == 1          # the qrels query
    assert stats["dropped_without_keywords"] == 1        # a caption with no span
    assert stats["similarity"]["max"] == pytest.approx(1.0) and stats["similarity"]["min"] == pytest.approx(0.0)
    # the threshold decides: at 0.0 the unmatched query keeps its (arbitrary) best span
    out, stats = transfer_rows([dict(r) for r in EN_ROWS], zh, FakeEncoder(PAIRS), min_similarity=0.0)
    assert stats["lists_out"] == 3 and stats["dropped_low_similarity"] == 0
    lists_from_rows(out)  # the schema accepts the rows


def test_doc_id_missing_from_the_chinese_set_is_a_one_line_error(sets):
    zh = load_retrieval_set(sets[1])
    bad = [dict(r) for r in EN_ROWS[:2]]
    bad[1] = {**bad[1], "candidates": bad[1]["candidates"] + [{**bad[1]["candidates"][0], "doc_id": "cr.9"}]}
    with pytest.raises(DataError) as err:
        transfer_rows(bad, zh, FakeEncoder(PAIRS), min_similarity=0.5, where="runs/lists/en")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("runs/lists/en[row 1]: candidates[2].doc_id: 'cr.9' not in CapRetrieval")


def test_bad_recipes_are_one_line_errors(tmp_path):
    good = {"source": "s.yaml", "corpus": "capretrieval", "output": "out", "align": {"min_similarity": 0.8}}
    assert TransferConfig.from_dict(good).align.min_similarity == 0.8
    path = tmp_path / "t.yaml"
    for raw, match in [({**good, "colour": 1}, r"t.yaml: unknown keys colour"),
                       ({**good, "align": {"min_similarity": 0.8, "modle": "x"}}, r"t.yaml: align: unknown keys modle"),
                       ({k: v for k, v in good.items() if k != "corpus"}, r"t.yaml: corpus: missing"),
                       ({**good, "align": {"min_similarity": 2}}, r"t.yaml: align.min_similarity must be")]:
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ValueError, match=match) as err:
            run_recipe(path)  # dispatched to the transfer by its `source:` key
        assert "\n" not in str(err.value)
    path.write_text("source: [unclosed\n")
    with pytest.raises(ValueError, match=r"t.yaml:\d+: malformed YAML"):
        run_recipe(path)


def test_distill_mine_cli_and_the_datamodule_write_chinese_lists(sets, tmp_path, capsys):
    from distill.cli import main
    from distill.training.cli import mine_missing_lists
    from distill.training.datamodule import ListsDataModule

    en, zh = sets
    source_lists = save_lists(lists_from_rows([dict(r) for r in EN_ROWS]), tmp_path / "lists-en")
    source = tmp_path / "mine-en.yaml"  # its output exists, so nothing is mined
    source.write_text(yaml.safe_dump({"corpus": str(en), "output": str(source_lists),
                                      "queries": {"generate": {"keywords": {"language": "en", "max_words": 3}}}}))
    recipe = tmp_path / "mine-zh.yaml"
    recipe.write_text(yaml.safe_dump({
        "source": str(source), "corpus": str(zh), "output": str(tmp_path / "lists-zh"),
        "align": {"model": str(make_tiny_bert(tmp_path / "tiny")), "min_similarity": -1.0, "batch_size": 8},
    }))
    assert main(["mine", "--config", str(recipe)]) == 0
    assert "lists-zh" in capsys.readouterr().out
    rows = load_lists(tmp_path / "lists-zh").to_list()
    assert {r["query_id"] for r in rows} == {"gen-a", "gen-b", "gen-c"}  # no source / no span: dropped
    for r in rows:
        assert r["query"] in keyword_spans(ZH[r["source_id"]], KeywordConfig())
        assert all(c["text"] == ZH[c["doc_id"]] for c in r["candidates"])
    stats = json.loads((tmp_path / "lists-zh" / "stats.json").read_text())
    assert (stats["lists_in"], stats["lists_out"], stats["dropped_without_source"]) == (5, 3, 1)
    assert set(stats["similarity"]) >= {"mean", "median", "min", "max"}

    # a fit recipe's data.mine_config reaches the transfer too, through the fit driver (never the datamodule)
    dm = ListsDataModule(lists=str(tmp_path / "from-fit"), mine_config=str(recipe))
    with pytest.raises(FileNotFoundError, match="from-fit: no such lists"):
        dm.prepare_data()
    assert not (tmp_path / "from-fit").exists()
    mine_missing_lists(str(tmp_path / "from-fit"), str(recipe))
    dm.prepare_data()
    assert len(load_lists(tmp_path / "from-fit")) == 3
