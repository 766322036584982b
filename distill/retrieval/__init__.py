"""Retrievers: BM25 (``bm25``), dense (``dense``), their fusion (``fusion``), TREC files (``trec``).

Every retriever has ``search(queries: list[str], k: int) -> list[list[tuple[str, float]]]``.
Submodules are imported on use: BM25 starts a JVM, dense search loads faiss.
"""
