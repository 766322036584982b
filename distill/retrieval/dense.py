"""Dense retrieval: encode with a dual encoder, exact inner-product search with faiss."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import faiss
import numpy as np

if TYPE_CHECKING:
    from students.dual_encoder import DualEncoder


class DenseRetriever:
    """Exact (flat) inner-product search over a corpus encoded once by ``encoder``.

    With normalised embeddings the inner product is the cosine similarity, as the official
    CapRetrieval evaluation uses.
    """

    def __init__(self, encoder: "DualEncoder", batch_size: int = 64, show_progress: bool = False):
        self.encoder = encoder
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.doc_ids: list[str] = []
        self.index: faiss.Index | None = None

    def index_corpus(self, doc_ids: Sequence[str], texts: Sequence[str]) -> "DenseRetriever":
        if len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc ids but {len(texts)} texts")
        emb = self.encoder.encode_passages(list(texts), batch_size=self.batch_size,
                                           show_progress=self.show_progress)
        emb = np.ascontiguousarray(emb.float().cpu().numpy(), dtype=np.float32)
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(emb)
        self.doc_ids = list(doc_ids)
        return self

    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        if self.index is None:
            raise RuntimeError("index_corpus() must be called before search()")
        if not queries:
            return []
        emb = self.encoder.encode_queries(list(queries), batch_size=self.batch_size,
                                          show_progress=self.show_progress)
        emb = np.ascontiguousarray(emb.float().cpu().numpy(), dtype=np.float32)
        k = min(k, len(self.doc_ids))
        scores, idx = self.index.search(emb, k)
        return [[(self.doc_ids[j], float(s)) for s, j in zip(row_s, row_i) if j >= 0]
                for row_s, row_i in zip(scores, idx)]
