"""students/: pooling, prefixes, lengths, towers, inference path, loading, sentence-transformers export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from students import DualEncoder, load_sentence_transformers, load_student, pool, save_sentence_transformers
from students.dual_encoder import SIDECAR

from factories import make_tiny_bert

TEXTS = ["the cat sat on the mat", "what is retrieval?", "dog", "where did the dog go home of the cat",
         "a model of a doc", "passage"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tiny_no_dropout(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny0") / "bert", dropout=0.0)


# ---- pooling -----------------------------------------------------------------------------------

def test_pooling_is_padding_side_agnostic():
    torch.manual_seed(0)
    lengths = [3, 5, 1]
    real = [torch.randn(n, 4) for n in lengths]
    right = torch.zeros(3, 5, 4)
    left = torch.zeros(3, 5, 4)
    right_mask = torch.zeros(3, 5, dtype=torch.long)
    left_mask = torch.zeros(3, 5, dtype=torch.long)
    for i, r in enumerate(real):
        n = len(r)
        right[i, :n], right_mask[i, :n] = r, 1
        left[i, 5 - n:], left_mask[i, 5 - n:] = r, 1
        # padding positions hold garbage in real models; it must not leak into the pooled vector
        right[i, n:] = 100.0
        left[i, :5 - n] = 100.0
    expected = {"cls": torch.stack([r[0] for r in real]), "last": torch.stack([r[-1] for r in real]),
                "mean": torch.stack([r.mean(0) for r in real])}
    for mode, want in expected.items():
        torch.testing.assert_close(pool(right, right_mask, mode), want)
        torch.testing.assert_close(pool(left, left_mask, mode), want)
    with pytest.raises(ValueError):
        pool(right, right_mask, "max")


# ---- tokenization, lengths, normalisation ------------------------------------------------------

def test_prefixes_and_max_lengths(tiny):
    enc = load_student(tiny, query_prefix="query: ", passage_prefix="passage: ",
                       query_max_length=6, passage_max_length=9)
    q = enc.tokenize_queries(["the cat"])
    assert q["input_ids"].tolist() == enc.tokenizer(["query: the cat"])["input_ids"]
    p = enc.tokenize_passages(["the cat"])
    assert p["input_ids"].tolist() == enc.tokenizer(["passage: the cat"])["input_ids"]
    long = " ".join(["cat"] * 50)
    assert enc.tokenize_queries([long])["input_ids"].shape[1] == 6
    assert enc.tokenize_passages([long])["input_ids"].shape[1] == 9
    with pytest.raises(TypeError):
        enc.tokenize_queries("a single string")
    with pytest.raises(ValueError):
        enc.tokenize(["x"], side="document")


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_forward_tokens_pooling_and_normalisation(tiny, pooling):
    enc = load_student(tiny, pooling=pooling, bf16=False).eval()
    batch = enc.tokenize_passages(TEXTS)
    with torch.no_grad():
        emb = enc.forward_tokens(batch, side="passage")
        hidden = enc.model(**batch).last_hidden_state
    assert emb.shape == (len(TEXTS), enc.dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(emb, torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], pooling)))
    raw = load_student(tiny, pooling=pooling, normalize=False).eval()
    with torch.no_grad():
        unnormalised = raw.forward_tokens(batch, side="passage")
    assert not torch.allclose(unnormalised.norm(dim=-1), torch.ones(len(TEXTS)))


def test_encode_restores_order_and_matches_one_by_one(tiny):
    enc = load_student(tiny, bf16=False, query_prefix="query: ")
    enc.train()  # encode must switch to eval (dropout off) and back
    batched = enc.encode_queries(TEXTS, batch_size=4)
    assert enc.training
    singles = torch.cat([enc.encode_queries([t]) for t in TEXTS])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    assert batched.dtype == torch.float32 and not batched.requires_grad
    assert enc.encode_passages([]).shape == (0, enc.dim)
    # queries carry the prefix, passages do not
    assert not torch.allclose(batched, enc.encode_passages(TEXTS, batch_size=4))


def test_encode_bf16_is_close_and_float32(tiny):
    enc = load_student(tiny)
    fp32 = enc.encode_passages(TEXTS, bf16=False)
    bf16 = enc.encode_passages(TEXTS, bf16=True)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=3e-2, rtol=0)


def test_separate_passage_tower(tiny):
    enc = load_student(tiny, shared=False, bf16=False)
    assert enc.tower("passage") is enc.passage_model and enc.passage_model is not enc.model
    q_before = enc.encode_queries(TEXTS)
    torch.testing.assert_close(enc.encode_passages(TEXTS), q_before)  # starts as an exact copy
    with torch.no_grad():
        for p in enc.passage_model.parameters():
            p.add_(0.05)
    torch.testing.assert_close(enc.encode_queries(TEXTS), q_before)
    assert not torch.allclose(enc.encode_passages(TEXTS), q_before)
    shared = load_student(tiny)
    assert shared.tower("passage") is shared.tower("query") is shared.model
    # shared weights are held once: no duplicate keys in checkpoints
    assert shared.state_dict().keys() == {f"model.{k}" for k in shared.model.state_dict()}


def test_gradient_checkpointing_same_gradients(tiny_no_dropout):
    grads = []
    for checkpointing in (False, True):
        enc = load_student(tiny_no_dropout, gradient_checkpointing=checkpointing).train()
        assert enc.gradient_checkpointing is checkpointing
        emb = enc.forward_tokens(enc.tokenize_queries(TEXTS))
        (emb @ emb.T).logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


# ---- loading ------------------------------------------------------------------------------------

def test_load_student_errors(tiny, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_student("no-such-org/no-such-model")
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="pooling_mode"):
        load_student(tiny, pooling_mode="mean")
    with pytest.raises(ValueError, match="pooling"):
        load_student(tiny, pooling="max")
    with pytest.raises(FileNotFoundError):
        load_sentence_transformers(tiny)  # a plain HF folder has no modules.json


def test_load_student_applies_overrides(tiny):
    enc = load_student(tiny, pooling="cls", normalize=False, query_prefix="q: ", passage_max_length=32)
    assert isinstance(enc, DualEncoder)
    assert (enc.pooling, enc.normalize, enc.query_prefix, enc.passage_max_length) == ("cls", False, "q: ", 32)
    assert enc.passage_prefix == ""  # untouched defaults stay


# ---- sentence-transformers export ---------------------------------------------------------------

def _st_encode(path: Path, texts: list[str], prompt: str) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return model.encode(texts, prompt=prompt, convert_to_tensor=True, batch_size=4).float().cpu()


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False), ("last", True)])
def test_export_round_trip_tiny(tiny, tmp_path, pooling, normalize):
    enc = load_student(tiny, pooling=pooling, normalize=normalize, query_prefix="query: ",
                       passage_prefix="passage: ", query_max_length=16, passage_max_length=48, bf16=False)
    out = save_sentence_transformers(enc, tmp_path / "st")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]  # no temp folders left behind
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == (
        ["Transformer", "Pooling", "Normalize"] if normalize else ["Transformer", "Pooling"])
    st_transformer = json.loads((out / "sentence_bert_config.json").read_text())
    assert (st_transformer["query_length"], st_transformer["document_length"]) == (16, 48)
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert st_config["default_prompt_name"] is None

    q, p = enc.encode_queries(TEXTS), enc.encode_passages(TEXTS)
    torch.testing.assert_close(_st_encode(out, TEXTS, "query: "), q, atol=1e-5, rtol=0)
    torch.testing.assert_close(_st_encode(out, TEXTS, "passage: "), p, atol=1e-5, rtol=0)

    back = load_sentence_transformers(out, bf16=False)
    assert back.options == enc.options
    torch.testing.assert_close(back.encode_queries(TEXTS), q, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.encode_passages(TEXTS), p, atol=1e-6, rtol=0)


def test_export_replaces_existing_folder(tiny, tmp_path):
    target = tmp_path / "st"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_sentence_transformers(load_student(tiny), target)
    assert not (target / "stale.txt").exists()
    assert (target / SIDECAR).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]
    with pytest.raises(ValueError, match="passage tower"):
        save_sentence_transformers(load_student(tiny, shared=False), tmp_path / "two")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(tmp_path):
    from distill.models import local_path

    folder = local_path("all-MiniLM-L6-v2")
    enc = load_student("all-MiniLM-L6-v2", bf16=False)
    assert (enc.pooling, enc.normalize, enc.dim) == ("mean", True, 384)
    texts = ["How do dual encoders get distilled from cross-encoders?", "A cat sat on the mat.",
             "Listwise KL divergence between teacher and student score distributions", "hi"]
    ours = enc.encode_passages(texts, batch_size=3)
    torch.testing.assert_close(_st_encode(folder, texts, ""), ours, atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.encode_queries(texts), ours, atol=1e-5, rtol=0)  # no prefixes

    prefixed = load_student("all-MiniLM-L6-v2", bf16=False, query_prefix="query: ")
    out = save_sentence_transformers(prefixed, tmp_path / "minilm")
    torch.testing.assert_close(_st_encode(out, texts, "query: "), prefixed.encode_queries(texts),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(_st_encode(out, texts, ""), ours, atol=1e-5, rtol=0)


# ---- GTR-style students: T5 encoders, decoder-only backbones, projection bottleneck --------------

def make_tiny_backbone(folder: Path, kind: str) -> Path:
    """A random 2-layer T5 or Llama with the tiny WordPiece tokenizer of ``make_tiny_bert`` (no downloads)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(str(make_tiny_bert(folder.parent / f"{kind}-tok")))
    torch.manual_seed(0)
    if kind == "t5":  # a full encoder-decoder checkpoint, as GTR starts from; the student keeps the encoder
        config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                          dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=tokenizer.pad_token_id)
        model = T5ForConditionalGeneration(config)
    else:  # decoder-only: the [SEP] the tokenizer appends is the EOS whose state is the embedding
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        model = LlamaForCausalLM(config)
        tokenizer.eos_token, tokenizer.pad_token = "[SEP]", None
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


LONG = TEXTS + [" ".join(["the cat sat on the mat"] * 12)]  # longer than both max lengths


@pytest.mark.parametrize("kind,projection_dim", [("t5", 8), ("llama", None), ("llama", 8)])
def test_gtr_students_fit_export_and_reload(tmp_path, kind, projection_dim):
    import lightning as L
    from sentence_transformers import SentenceTransformer

    from distill.losses import ObjectiveConfig
    from distill.training.datamodule import ListsDataModule
    from distill.training.module import DistillationModule, OptimizerConfig, StudentConfig
    from factories import make_lists

    folder = make_tiny_backbone(tmp_path / kind, kind)
    L.seed_everything(0)
    module = DistillationModule(
        StudentConfig(name=str(folder), projection_dim=projection_dim, query_prefix="query: ",
                      query_max_length=12, passage_max_length=20),
        teacher=None, objective=ObjectiveConfig(kl_weight=1.0, contrastive_weight=0.1),
        optimizer=OptimizerConfig(lr=1e-2, warmup_ratio=0.0))
    enc = module.student
    assert type(enc.model).__name__ == {"t5": "T5EncoderModel", "llama": "LlamaModel"}[kind]
    assert enc.dim == (projection_dim or 32)
    if kind == "llama":
        assert enc.pooling == "last" and enc.tokenizer.padding_side == "left"
        batch = enc.tokenize_queries(["dog", "the cat sat on the mat"])
        assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]
    else:
        assert enc.pooling == "mean"
    if projection_dim:
        assert enc.projection is not None and enc.projection.linear.bias is None
    start = {k: v.clone() for k, v in enc.state_dict().items()}
    data = ListsDataModule(str(make_lists(tmp_path / "lists.jsonl")), list_size=4, batch_size=8, dev_fraction=0.0)
    L.Trainer(default_root_dir=str(tmp_path / "run"), accelerator="cpu", devices=1, logger=False, max_steps=3,
              enable_progress_bar=False, enable_model_summary=False, precision="32-true",
              enable_checkpointing=False, num_sanity_val_steps=0).fit(module, datamodule=data)
    state = enc.state_dict()
    assert max((state[k] - start[k]).abs().max().item() for k in state) > 1e-4  # it trained
    if projection_dim:
        assert any("head" in k and not torch.equal(state[k], start[k]) for k in state)  # the bottleneck too

    out = save_sentence_transformers(enc, tmp_path / "st")
    kinds = [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", *(["Dense"] if projection_dim else []), "Normalize"]
    q, p = enc.encode_queries(LONG, batch_size=3, bf16=False), enc.encode_passages(LONG, batch_size=3, bf16=False)
    assert q.shape == (len(LONG), projection_dim or 32)
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    # prompts and per-side lengths travel with the folder: encode_query / encode_document need nothing else
    torch.testing.assert_close(st.encode_query(LONG, convert_to_tensor=True, batch_size=3).float(), q, atol=1e-5, rtol=0)
    torch.testing.assert_close(st.encode_document(LONG, convert_to_tensor=True, batch_size=3).float(), p, atol=1e-5, rtol=0)

    back = load_student(out, bf16=False)
    assert back.options == enc.options and type(back.model) is type(enc.model)
    torch.testing.assert_close(back.encode_queries(LONG), q, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="projection"):
        load_student(out, projection_dim=5) if projection_dim else build_wrong_projection(back)


def build_wrong_projection(enc: DualEncoder) -> None:
    from students.dual_encoder import new_projection

    DualEncoder(enc.model, enc.tokenizer, enc.options, projection=new_projection(enc.hidden_size, 4))
