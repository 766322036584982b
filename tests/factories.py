"""Tiny local inputs built inside the tests: random models from a config, hand-made lists."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import string

import torch

WORDS = "the a of query passage doc retrieval model cat dog sat on mat what is where did go home".split()

def offline_env(**extra: str) -> dict[str, str]:
    """A clean, offline environment for a `distill` subprocess: nothing an earlier test (or Lightning in
    this process) exported leaks in; ``extra`` adds or overrides variables (PYTHONPATH, DISTILL_CACHE, ...)."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "DISTILL_DATA")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", **extra)
    return env


def make_tiny_bert(folder: Path, dropout: float = 0.1, seed: int = 0) -> Path:
    """A random 2-layer BERT + WordPiece tokenizer saved as an ordinary HF folder (no downloads)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "?", ".", *string.ascii_lowercase,
              *("##" + c for c in string.ascii_lowercase), *WORDS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder




def make_lists(path: Path, n_queries: int = 24, list_size: int = 4, seed: int = 0, scored: bool = True) -> Path:
    """A JSONL of training lists over a toy vocabulary; the teacher prefers passages sharing words."""
    rng = random.Random(seed)
    docs = {f"d{i}": " ".join(rng.sample(WORDS, 5)) for i in range(40)}
    rows = []
    for q in range(n_queries):
        words = rng.sample(WORDS, 2)
        ids = rng.sample(sorted(docs), list_size)
        cands = []
        for r, d in enumerate(ids, 1):
            overlap = sum(w in docs[d].split() for w in words)
            cands.append({"doc_id": d, "text": docs[d],
                          "teacher_score": (overlap * 3.0 + rng.random()) if scored else None,
                          "bm25_rank": r, "dense_rank": None})
        rows.append({"query_id": f"q{q}", "query": " ".join(words), "query_type": "keywords",
                     "source_id": "", "candidates": cands})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- tiny cross-encoders (teachers) ----------------------------------------------------------

CE_WORDS = (
    "the a of to in is and for on with how many people live berlin city museum art york new population "
    "cat dog sat mat river bank money water tree house car road gym school wechat update policy image shows"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _tokenizer(folder):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + CE_WORDS + list("abcdefghijklmnopqrstuvwxyz")) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=128)


def _config(num_labels=1):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(SPECIALS) + len(CE_WORDS) + 26, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=128, num_labels=num_labels,
        initializer_range=0.3,  # wide weights: scores that differ clearly between pairs
    )


def make_cross_encoder(folder, num_labels=1, seed=0, model_cls=None):
    """Save a random tiny BERT (+ tokenizer) to ``folder``; returns the model in eval mode."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = _tokenizer(folder)
    model = (model_cls or BertForSequenceClassification)(_config(num_labels)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def random_pairs(n, seed=0):
    rng = random.Random(seed)
    queries = [" ".join(rng.choices(CE_WORDS, k=rng.randint(1, 6))) for _ in range(n)]
    passages = [" ".join(rng.choices(CE_WORDS, k=rng.randint(1, 40))) for _ in range(n)]
    return queries, passages


def export_onnx(model, folder, tokenizer_from):
    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(5, 20, (2, 9))
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, inputs, str(folder / "model.onnx"), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    for file in tokenizer_from.glob("*"):
        if folder != tokenizer_from and file.name.startswith(("vocab", "tokenizer", "special_tokens")):
            shutil.copy(file, folder / file.name)
