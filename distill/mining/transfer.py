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
``transfer_from_config`` reads a recipe::

    source: recipes/mine/capretrieval-en.yaml   # a mining recipe; mined first when its output is missing
    corpus: capretrieval                        # the parallel set whose texts replace the source's, by id
    output: runs/lists/capretrieval
    align:
      model: multilingual-e5-small
      min_similarity: 0.85
      batch_size: 64
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Protocol

import yaml

from distill.atomic import write_json_atomic
from distill.data.corpora import DataError, RetrievalSet, load_retrieval_set, normalize_text
from distill.mining.queries.keywords import KeywordConfig, keyword_spans
from distill.mining.recipe import read_recipe


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
        known = {"source", "corpus", "output", "align"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        for key in ("source", "corpus", "output"):
            if raw.get(key) in (None, ""):
                raise ValueError(f"{where}: {key}: missing")
        align = raw.get("align") or {}
        if not isinstance(align, dict):
            raise ValueError(f"{where}: align: expected a mapping")
        unknown = set(align) - {f.name for f in fields(AlignConfig)}
        if unknown:
            raise ValueError(f"{where}: align: unknown keys {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(f.name for f in fields(AlignConfig))})")
        try:
            return cls(source=str(raw["source"]), corpus=str(raw["corpus"]), output=str(raw["output"]),
                       align=AlignConfig(**align))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TransferConfig":
        path = Path(path)
        return cls.from_dict(read_recipe(path), where=str(path))


def is_transfer_recipe(path: str | Path) -> bool:
    """A recipe with a ``source:`` key; anything unreadable is left to the mining recipe's own errors."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "source" in raw


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

    norm = normalize_text if target.normalize_text else (lambda t: t)
    best: list[tuple[str, float]] = []
    if todo:
        span_index = {s: k for k, s in enumerate(dict.fromkeys(s for _, spans in todo for s in spans))}
        q_emb = F.normalize(encoder.encode_queries([norm(r["query"]) for r, _ in todo]).float(), dim=-1)
        s_emb = F.normalize(encoder.encode_queries([norm(s) for s in span_index]).float(), dim=-1)
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
    stats["similarity"] = _summary([s for _, s in best])
    return out, stats


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    import statistics

    ordered = sorted(values)
    return {"mean": statistics.mean(values), "median": statistics.median(values),
            "p10": ordered[int(0.1 * (len(ordered) - 1))], "min": ordered[0], "max": ordered[-1]}


# --------------------------------------------------------------------------------------------------
# the orchestrator


def transfer(config: TransferConfig, encoder: QueryEncoder | None = None) -> Path:
    """Mine the source lists if missing, transfer them, save lists + stats.json; returns the output."""
    from distill.data.lists import lists_from_rows, load_lists, save_lists
    from distill.mining.mine import MineConfig, mine_from_config

    source = MineConfig.from_yaml(config.source)
    source_lists = Path(source.output)
    if not source_lists.exists():
        mine_from_config(config.source)
    keywords = KeywordConfig.from_dict((source.queries.generate or {}).get("keywords"),
                                       f"{config.source}: queries.generate.keywords")
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


def transfer_from_config(path: str | Path, output: str | Path | None = None,
                         encoder: QueryEncoder | None = None) -> Path:
    config = TransferConfig.from_yaml(path)
    if output is not None:
        config.output = str(output)
    return transfer(config, encoder=encoder)
