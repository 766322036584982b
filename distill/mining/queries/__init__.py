"""Synthetic training queries from corpus passages; every query carries its ``query_type``.

Two kinds of generator share one protocol, ``generate([(doc_id, text), ...]) -> [SyntheticQuery]``:

* ``keywords`` (:mod:`.keywords`) — an offline extractor of short entity/event phrases, the shape of
  CapRetrieval's own queries ("gas meter", "WeChat feature update", "燃气表"); always spans of the
  passage, deterministic.
* ``keybert`` (:mod:`.keyphrases`) — English keyphrases ranked by KeyBERT (a maintained library)
  with the packaged all-MiniLM-L6-v2; spans of the passage, query type ``keybert``. Beside the
  hand-written ``keywords`` chunker so an ablation arm can compare the two.
* ``llm`` (:mod:`.llm`) — ``question`` / ``claim`` / ``title`` queries (the CADET query types,
  Tamber et al. 2025) from any causal LM through ``transformers`` generation.

Configuration is data: one validated dataclass per generator; ``build_generators`` turns a
recipe's ``queries.generate`` mapping into generators. ``drop_eval_overlap`` removes generated
queries that equal an evaluation query (and duplicate (query, source) pairs).

The submodules import this one (the protocol and the shared config checks), never the reverse at
import time: ``build_generators`` imports a generator's module when a recipe asks for it.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable


@dataclass(frozen=True)
class SyntheticQuery:
    """One generated training query and the passage it was generated from."""

    query: str
    query_type: str
    source_id: str


@runtime_checkable
class QueryGenerator(Protocol):
    def generate(self, passages: list[tuple[str, str]]) -> list[SyntheticQuery]:
        """Queries for ``(doc_id, text)`` passages, in passage order within each query type."""
        ...


def normalize_query(text: str) -> str:
    """The comparison form of a query: NFKC, case-folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedupe_queries(queries: Iterable[SyntheticQuery]) -> list[SyntheticQuery]:
    """First occurrence of each (normalised query, source) pair, order kept."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for q in queries:
        key = (normalize_query(q.query), q.source_id)
        if key not in seen:
            seen.add(key)
            kept.append(q)
    return kept


def drop_eval_overlap(queries: Iterable[SyntheticQuery],
                      eval_queries: Iterable[str]) -> tuple[list[SyntheticQuery], int]:
    """Drop generated queries equal to an evaluation query (case-insensitive, white space collapsed).

    Returns the kept queries (also deduplicated on (query, source)) and the number dropped for being
    an evaluation query; duplicates are removed without being counted.
    """
    banned = {normalize_query(q) for q in eval_queries}
    kept, dropped = [], 0
    for q in dedupe_queries(queries):
        if normalize_query(q.query) in banned:
            dropped += 1
        else:
            kept.append(q)
    return kept, dropped


def _check_int(owner: str, name: str, value: Any, minimum: int | None = None,
               maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}.{name} must be <= {maximum}, got {value}")


def _config_from_dict(cls, raw: Mapping[str, Any] | None, where: str):
    """``cls(**raw)`` with unknown keys reported by name (a recipe typo is an error, not a default)."""
    raw = dict(raw or {})
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    try:
        return cls(**raw)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


# --------------------------------------------------------------------------------------------------
# recipes

GENERATORS = ("keywords", "keybert", "llm")


def build_generators(spec: Mapping[str, Any] | None) -> list[QueryGenerator]:
    """Generators from a recipe's ``queries.generate`` mapping, in its order, e.g.
    ``{"keywords": {"language": "en", "per_passage": 2}, "keybert": {}, "llm": {"types": ["question"]}}``.
    A generator given as ``null`` / ``{}`` uses its defaults."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        raise ValueError(f"generate: expected a mapping of generator name → options, got {spec!r}")
    generators: list[QueryGenerator] = []
    for name, options in spec.items():
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"generate.{name}: expected a mapping of options, got {options!r}")
        if name == "keywords":
            from distill.mining.queries.keywords import KeywordConfig, KeywordGenerator

            generators.append(KeywordGenerator(KeywordConfig.from_dict(options, "generate.keywords")))
        elif name == "keybert":
            from distill.mining.queries.keyphrases import KeyBERTConfig, KeyBERTGenerator

            generators.append(KeyBERTGenerator(KeyBERTConfig.from_dict(options, "generate.keybert")))
        elif name == "llm":
            from distill.mining.queries.llm import LLMConfig, LLMGenerator

            generators.append(LLMGenerator(LLMConfig.from_dict(options, "generate.llm")))
        else:
            raise ValueError(f"generate: unknown generator {name!r} (known: {', '.join(GENERATORS)})")
    return generators


__all__ = ["GENERATORS", "QueryGenerator", "SyntheticQuery", "build_generators", "dedupe_queries",
           "drop_eval_overlap", "normalize_query"]
