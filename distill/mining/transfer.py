"""Cross-lingual transfer of teacher-scored lists: English lists → lists in a parallel language, by id.

CapRetrieval (Chinese) and CapRetrievalEn (its English translation) share document ids, and the only
teacher here (ms-marco-MiniLM-L-12-v2) reads English only. So the lists are mined and scored in
English, then carried over: every candidate's text becomes the parallel caption with the same doc id,
teacher scores and their order stay exactly as they are. A synthetic English keyword query has no
translation, so its Chinese counterpart is extracted from the parallel caption of its source: among
the Chinese keyword spans of that caption (``mining.queries.keywords.keyword_spans``) the one
whose multilingual embedding is closest to the English query wins; a list whose best cosine is below
``min_similarity`` is dropped and counted. Queries without a source (from a qrels split) cannot be
aligned this way and are dropped and counted.

``transfer_rows`` is the pure part (rows + target set + any object with ``encode_queries``);
``transfer`` saves its result; ``mining/recipe.py`` reads a recipe with a ``source:`` key, mines the
source first when its lists are missing, and calls ``transfer``::

    source: recipes/mine/capretrieval-en.yaml   # a mining recipe; mined first when its output is missing
    corpus: capretrieval                        # the parallel set whose texts replace the source's, by id
    output: runs/lists/capretrieval
    align:
      model: multilingual-e5-small
      min_similarity: 0.85
      batch_size: 64
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from distill.atomic import write_json_atomic
from distill.data.corpora import DataError, RetrievalSet, load_retrieval_set, locate_retrieval_set
from distill.data.lists import lists_from_rows, load_lists, save_lists
from distill.mining.queries.keywords import KeywordConfig, keyword_spans
from distill.mining.settings import check_keys, section
from distill.mining.stats import summary
from distill.retrieval import as_searched


class QueryEncoder(Protocol):
    def encode_queries(self, texts: list[str]) -> Any:  # Tensor[N, D]
        ...


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass
class AlignConfig:
    model: str = "multilingual-e5-small"
    min_similarity: float = 0.85
    batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.min_similarity, bool) or not isinstance(self.min_similarity, (int, float)) \
                or not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"align.min_similarity must be a cosine in [-1, 1], got {self.min_similarity!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"align.batch_size must be a positive integer, got {self.batch_size!r}")
        self.min_similarity = float(self.min_similarity)


@dataclass
class TransferConfig:
    source: str
    corpus: str
    output: str
    align: AlignConfig = field(default_factory=AlignConfig)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "TransferConfig":
        """From a recipe mapping; ``where`` (the recipe file) starts every error message."""
        check_keys(raw, {"source", "corpus", "output", "align"}, ("source", "corpus", "output"), where)
        return cls(source=str(raw["source"]), corpus=str(raw["corpus"]), output=str(raw["output"]),
                   align=section(AlignConfig, raw.get("align"), where, "align"))

    def check_names(self, where: str = "config") -> None:
        """The target corpus and the alignment model resolve locally; else one line naming the field."""
        from distill.models import local_path

        for field_name, check in (("corpus", lambda: locate_retrieval_set(self.corpus)),
                                  ("align.model", lambda: local_path(self.align.model))):
            try:
                check()
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"{where}: {field_name}: {err}") from None


# --------------------------------------------------------------------------------------------------
# the transfer


def transfer_rows(rows: Iterable[dict], target: RetrievalSet, encoder: QueryEncoder, *,
                  min_similarity: float, keywords: KeywordConfig | None = None,
                  where: str = "lists") -> tuple[list[dict], dict]:
    """English list rows → rows in ``target``'s language with the same teacher scores.

    ``where`` names the source lists in errors (``where[row i]: field: ...``). Returns the kept rows
    and counts: lists in / out, dropped without source, without keyword spans, for low similarity,
    and a summary of every aligned list's best cosine.
    """
    import torch.nn.functional as F

    keywords = keywords or KeywordConfig()
    rows = list(rows)
    ids, texts = target.doc_texts()
    text_of = dict(zip(ids, texts))
    missing = f"not in {target.name} ({target.path})"
    for i, row in enumerate(rows):  # every id is checked before any encoding work
        for j, cand in enumerate(row["candidates"]):
            if cand["doc_id"] not in text_of:
                raise DataError(f"{where}[row {i}]: candidates[{j}].doc_id: {cand['doc_id']!r} {missing}")
        if row.get("source_id") and row["source_id"] not in text_of:
            raise DataError(f"{where}[row {i}]: source_id: {row['source_id']!r} {missing}")

    stats = {"lists_in": len(rows), "dropped_without_source": 0, "dropped_without_keywords": 0,
             "dropped_low_similarity": 0}
    todo: list[tuple[dict, list[str]]] = []
    for row in rows:
        if not row.get("source_id"):
            stats["dropped_without_source"] += 1
            continue
        spans = keyword_spans(text_of[row["source_id"]], keywords, language="zh")
        if not spans:
            stats["dropped_without_keywords"] += 1
            continue
        todo.append((row, spans))

    best: list[tuple[str, float]] = []
    if todo:
        span_index = {s: k for k, s in enumerate(dict.fromkeys(s for _, spans in todo for s in spans))}
        queries = as_searched([r["query"] for r, _ in todo], target.normalize_text)
        q_emb = F.normalize(encoder.encode_queries(queries).float(), dim=-1)
        s_emb = F.normalize(encoder.encode_queries(as_searched(span_index, target.normalize_text)).float(), dim=-1)
        for (row, spans), q in zip(todo, q_emb):
            sims = s_emb[[span_index[s] for s in spans]] @ q
            k = int(sims.argmax())  # ties: the first span
            best.append((spans[k], float(sims[k])))

    out = []
    for (row, _), (span, sim) in zip(todo, best):
        if sim < min_similarity:
            stats["dropped_low_similarity"] += 1
            continue
        cands = [{**c, "text": text_of[c["doc_id"]]} for c in row["candidates"]]
        out.append({"query_id": row["query_id"], "query": span, "query_type": row["query_type"],
                    "source_id": row["source_id"], "candidates": cands})
    stats["lists_out"] = len(out)
    stats["similarity"] = summary([s for _, s in best])
    return out, stats


# --------------------------------------------------------------------------------------------------
# the orchestrator


def transfer(config: TransferConfig, source_lists: str | Path, keywords: KeywordConfig | None = None,
             encoder: QueryEncoder | None = None) -> Path:
    """Transfer the saved ``source_lists`` (mined with ``keywords``' word limits) to ``config.corpus``;
    saves lists + stats.json under ``config.output`` and returns it."""
    keywords = keywords or KeywordConfig()
    source_lists = Path(source_lists)
    rows = load_lists(source_lists).to_list()
    target = load_retrieval_set(config.corpus)
    if encoder is None:
        from students import load_student

        student = load_student(config.align.model)

        class _Batched:
            def encode_queries(self, texts: list[str]):
                return student.encode_queries(texts, batch_size=config.align.batch_size, show_progress=True)

        encoder = _Batched()
    out_rows, counts = transfer_rows(rows, target, encoder, min_similarity=config.align.min_similarity,
                                     keywords=keywords, where=str(source_lists))
    if not out_rows:
        raise DataError(f"{config.corpus}: every list was dropped in the transfer ({counts})")
    output = Path(config.output)
    save_lists(lists_from_rows(out_rows), output)
    stats = {"config": asdict(config), "source_lists": str(source_lists),
             "keywords": {"min_words": keywords.min_words, "max_words": keywords.max_words}, **counts}
    write_json_atomic(output / "stats.json", stats)
    return output
