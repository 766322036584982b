"""Tiny local inputs built inside the tests: random models from a config, hand-made lists."""
from __future__ import annotations

import json
import random
from pathlib import Path

from test_students import WORDS, make_tiny_bert  # noqa: F401  (one factory for every test module)


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
