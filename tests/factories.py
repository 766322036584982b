"""Tiny local inputs built inside the tests: random models from a config, hand-made lists."""
from __future__ import annotations

import json
import random
from pathlib import Path

import string

import torch

WORDS = "the a of query passage doc retrieval model cat dog sat on mat what is where did go home".split()

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
