"""Retrievers: BM25 (``bm25``), dense (``dense``), their fusion (``fusion``), TREC files (``trec``).

Every retriever has ``search(queries: list[str], k: int) -> list[list[tuple[str, float]]]``.
:func:`build_retriever` is the one way evaluation and mining index a data set's corpus, and
:func:`as_searched` the one place a set's text convention is applied. Submodules are imported on
use: BM25 starts a JVM, dense search loads faiss.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

if TYPE_CHECKING:
    from distill.data.corpora import RetrievalSet
    from students.dual_encoder import DualEncoder

BM25_NAMES = ("bm25",)


class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]: ...


def as_searched(texts: Iterable[str], normalize: bool) -> list[str]:
    """Texts as retrievers and the teacher see them: lower-cased with white space collapsed when
    ``normalize`` (CapRetrieval's official evaluation does this before encoding), else unchanged."""
    from distill.data.corpora import normalize_text

    return [normalize_text(t) for t in texts] if normalize else list(texts)


def build_retriever(model: "str | DualEncoder", rs: "RetrievalSet", *, normalize: bool | None = None,
                    batch_size: int = 64, show_progress: bool = False, bf16: bool | None = False) -> Retriever:
    """A retriever over ``rs``'s corpus: BM25 (pyserini, in-process, cached under the cache root) for
    ``"bm25"``; otherwise dense (faiss, exact inner product) over a student name / folder or an
    in-memory encoder.

    ``normalize``: None follows the set's own convention (``rs.normalize_text``). ``bf16`` applies to
    an encoder loaded by name (default fp32, exact; None: bf16 where the hardware has bf16 units).
    """
    normalize = rs.normalize_text if normalize is None else normalize
    ids, texts = rs.doc_texts()
    texts = as_searched(texts, normalize)
    if isinstance(model, str) and model.lower() in BM25_NAMES:
        from distill.paths import cache_root
        from distill.retrieval.bm25 import BM25Index

        return BM25Index.open_or_build(zip(ids, texts), cache_root() / "bm25", language=rs.language)
    from distill.retrieval.dense import DenseRetriever

    if isinstance(model, str):
        from students import load_student

        model = load_student(model, bf16=bf16)
    return DenseRetriever(model, batch_size=batch_size, show_progress=show_progress).index_corpus(ids, texts)
