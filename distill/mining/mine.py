"""`distill mine`: queries → candidates (BM25 + dense, RRF) → teacher scores → training lists.

Every stage is resumable: the query and candidate stages write their output atomically under
``.<output name>.work/`` beside the output folder, keyed by a hash of the configuration that
produced them, and teacher scores go through the persistent score cache, so a re-run (or a run
after a kill) redoes only what is missing. ``mining/recipe.py`` reads the recipe and calls :func:`mine`.
"""
from __future__ import annotations

import hashlib
import json
import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from distill.atomic import check_writable, move_aside, write_json_atomic
from distill.data.corpora import DataError, RetrievalSet, load_retrieval_set, locate_retrieval_set
from distill.data.lists import lists_from_rows, save_lists
from distill.mining.label_check import format_label_check, label_check
from distill.mining.queries import SyntheticQuery, build_generators, drop_eval_overlap
from distill.mining.settings import check_keys, check_value, section
from distill.mining.stats import count, query_type_table, summary
from distill.retrieval import as_searched, build_retriever
from distill.retrieval.fusion import reciprocal_rank_fusion
from teachers.spec import TeacherSpec


@dataclass
class QuerySource:
    """Where training queries come from: a qrels split of the set's own queries, and/or generated."""

    split: str | None = None            # e.g. "train" for SciFact / NFCorpus
    generate: dict = field(default_factory=dict)  # {"keywords": {...}, "llm": {...}} → mining.queries
    passages: int = 1000                 # passages sampled for generation
    max_queries: int | None = None

    def __post_init__(self) -> None:
        if not self.split and not self.generate:
            raise ValueError("queries: give a qrels split (queries.split) and/or generators (queries.generate)")
        if self.passages <= 0:
            raise ValueError(f"queries.passages must be positive, got {self.passages}")


@dataclass
class RetrievalConfig:
    bm25: bool = True
    dense: str | None = "all-MiniLM-L6-v2"
    depth: int = 100
    rrf_k: int = 60
    list_size: int = 20
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not self.bm25 and not self.dense:
            raise ValueError("retrieval: enable bm25 and/or name a dense model")
        if self.list_size < 2 or self.depth < self.list_size:
            raise ValueError(f"retrieval: need 2 <= list_size <= depth, got {self.list_size} and {self.depth}")


@dataclass
class FilterConfig:
    """Which generated queries become lists (queries from a qrels split always do). CADET keeps a
    query only when its source passage is in the zero-shot student's top 20 AND the teacher ranks
    it first: ``source_in_student_top_k: 20`` + ``source_top_k: 1``."""

    # the teacher ranks the source passage within its top k of the list (null: no teacher filter)
    source_top_k: int | None = 1
    # the source passage is within the top k of the retrieval.dense model's own run — the
    # zero-shot student when that model is the student (null: no student filter); k <= retrieval.depth
    source_in_student_top_k: int | None = None

    def __post_init__(self) -> None:
        for name in ("source_top_k", "source_in_student_top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"filter.{name} must be >= 1 or null, got {value}")


@dataclass
class MineConfig:
    corpus: str
    output: str
    queries: QuerySource
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    filter: FilterConfig = field(default_factory=FilterConfig)
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "MineConfig":
        """From a recipe mapping; ``where`` (the recipe file) starts every error message."""
        check_keys(raw, {"corpus", "output", "queries", "retrieval", "teacher", "filter", "seed"},
                   ("corpus", "output", "queries"), where)
        check_value(raw.get("seed", 0), "int", f"{where}: seed")
        config = cls(
            corpus=str(raw["corpus"]), output=str(raw["output"]),
            queries=section(QuerySource, raw["queries"], where, "queries"),
            retrieval=section(RetrievalConfig, raw.get("retrieval"), where, "retrieval"),
            teacher=section(TeacherSpec, raw.get("teacher"), where, "teacher"),
            filter=section(FilterConfig, raw.get("filter"), where, "filter"),
            seed=raw.get("seed", 0),
        )
        k = config.filter.source_in_student_top_k
        if k is not None and not config.retrieval.dense:
            raise ValueError(f"{where}: filter.source_in_student_top_k: needs a student run (retrieval.dense)")
        if k is not None and k > config.retrieval.depth:
            raise ValueError(f"{where}: filter.source_in_student_top_k: {k} is deeper than retrieval.depth "
                             f"({config.retrieval.depth}), the deepest the student run goes")
        return config

    def check_names(self, where: str = "config") -> None:
        """Every name the recipe gives (corpus, generators and their models, dense model, teacher)
        resolves locally, before any generation or retrieval runs; else one line naming the field."""
        from distill.models import local_path

        def check(field_name: str, fn) -> None:
            try:
                fn()
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"{where}: {field_name}: {err}") from None

        check("corpus", lambda: locate_retrieval_set(self.corpus))
        generators = []
        check("queries.generate", lambda: generators.extend(build_generators(self.queries.generate)))
        for generator in generators:
            model = getattr(getattr(generator, "config", None), "model", None)
            if model is not None:  # a generator with a model (llm, keybert)
                name = "keybert" if getattr(generator, "query_type", None) == "keybert" else "llm"
                check(f"queries.generate.{name}.model", lambda: local_path(model))
        if self.retrieval.dense:
            check("retrieval.dense", lambda: local_path(self.retrieval.dense))
        check("teacher.name", lambda: local_path(self.teacher.name))


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached_stage(work: Path, name: str, key: str, build):
    """Return the stage's saved JSON if it was built with this key, else build, save atomically, return."""
    path = work / f"{name}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict) or "data" not in saved:
                raise ValueError("not a stage object")
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            move_aside(path, f"corrupt stage cache ({str(err)[:80]})")
            saved = {}
        if saved.get("key") == key:
            return saved["data"]
    data = build()
    write_json_atomic(path, {"key": key, "data": data})
    return data


def evaluation_queries(rs: RetrievalSet) -> list[str]:
    """Texts of every query the set evaluates on (never training material)."""
    eval_ids = set(rs.qrels.get("test", {}))
    if rs.name.startswith("capretrieval") or not eval_ids:
        eval_ids = set(rs.queries["query_id"])
    return [t for q, t in zip(rs.queries["query_id"], rs.queries["text"]) if q in eval_ids]


def pick_passages(rs: RetrievalSet, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (doc id, text) passages of the set, in corpus order. The first ``n`` of one seeded
    shuffle, so raising ``n`` adds passages and keeps every earlier one (mining more captions
    generates and scores only for the new ones)."""
    ids, texts = rs.doc_texts()
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    return [(ids[i], texts[i]) for i in sorted(order[:n])]


# passages per saved step of a generator: a killed LLM run loses at most this many passages' work
GENERATION_CHUNK = 128


def _read_mapping(path: Path, what: str, shape: str) -> dict:
    """A per-item cache file (``{id: value}``); empty when missing, moved aside (one line) when corrupt."""
    if not path.is_file():
        return {}
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(done, dict):
            raise ValueError(f"not a mapping of {shape}")
        return done
    except ValueError as err:
        move_aside(path, f"corrupt {what} ({str(err)[:80]})")
        return {}


def generate_cached(work: Path, name: str, options, corpus: str,
                    passages: list[tuple[str, str]]) -> list[SyntheticQuery]:
    """Generator ``name``'s queries for ``passages``, generating only for passages it has not seen.

    Its outputs are kept per passage in ``work/generated/<name>-<hash of name, options, corpus>.json``
    (written atomically every :data:`GENERATION_CHUNK` passages), so adding a generator to a recipe,
    or passages to it, runs generation only for what is new."""
    path = work / "generated" / f"{name}-{_key(name, options, corpus)}.json"
    done: dict[str, list[list[str]]] = _read_mapping(path, "generation cache", "doc id → queries")
    missing = [p for p in passages if p[0] not in done]
    if missing:
        (generator,) = build_generators({name: options})
        for first in range(0, len(missing), GENERATION_CHUNK):
            chunk = missing[first: first + GENERATION_CHUNK]
            found: dict[str, list[list[str]]] = {doc_id: [] for doc_id, _ in chunk}
            for q in generator.generate(chunk):
                found[q.source_id].append([q.query, q.query_type])
            done.update(found)
            write_json_atomic(path, done)
    return [SyntheticQuery(query, query_type, doc_id)
            for doc_id, _ in passages for query, query_type in done[doc_id]]


def stage_keys(config: MineConfig) -> tuple[str, str]:
    """(queries key, candidates key): the hashes under which the two stages are cached."""
    qkey = _key(asdict(config.queries), config.corpus, config.seed)
    return qkey, _key(qkey, asdict(config.retrieval))


def build_queries(config: MineConfig, rs: RetrievalSet, stats: dict, work: Path,
                  generate: Callable[[dict, list[tuple[str, str]]], list[SyntheticQuery]] | None = None) -> list[dict]:
    """The recipe's queries (qrels split and/or generated). ``generate`` replaces the per-generator
    cached generation (``mining/distributed.py`` passes one that shards the passages over ranks)."""
    src = config.queries
    out: list[dict] = []
    if src.split:
        if src.split == "test":
            raise DataError(f"{rs.path}: queries.split: the test split is evaluation data and never trains")
        split_qrels = rs.split_qrels(src.split)
        test_ids = set(rs.qrels.get("test", {}))
        overlap = test_ids & set(split_qrels)
        if overlap:
            raise DataError(f"{rs.path}: qrels/{src.split}.tsv shares {len(overlap)} queries with the test split")
        text = dict(zip(rs.queries["query_id"], rs.queries["text"]))
        out += [{"query_id": q, "query": text[q], "query_type": src.split, "source_id": ""}
                for q in split_qrels]
        stats["queries_from_file"] = len(out)
    if src.generate:
        build_generators(src.generate)  # every generator's options checked before any runs
        passages = pick_passages(rs, src.passages, config.seed)
        if generate is not None:
            generated = generate(src.generate, passages)
        else:
            generated = []
            for name, options in src.generate.items():
                generated += generate_cached(work, name, options, config.corpus, passages)
        kept, dropped = drop_eval_overlap(generated, evaluation_queries(rs))
        stats["queries_generated"] = len(generated)
        stats["generated_by_type"] = count(q.query_type for q in generated)
        stats["dropped_equal_to_evaluation_query"] = dropped
        for q in kept:
            qid = f"gen-{q.query_type}-{q.source_id}-{_key(q.query, q.source_id)[:8]}"
            out.append({"query_id": qid, "query": q.query, "query_type": q.query_type, "source_id": q.source_id})
    seen, unique = set(), []
    for row in out:
        if row["query_id"] not in seen:
            seen.add(row["query_id"])
            unique.append(row)
    if src.max_queries is not None and len(unique) > src.max_queries:
        unique = random.Random(config.seed).sample(unique, src.max_queries)
    return unique


def candidate_cache(config: MineConfig, work: Path) -> Path:
    """Where :func:`build_candidates` keeps its rows, ``{query id: row}``."""
    return work / f"candidates-{_key(config.corpus, asdict(config.retrieval))}.json"


def build_candidates(config: MineConfig, rs: RetrievalSet, queries: list[dict], work: Path) -> list[dict]:
    """Fused top-N per query, each candidate with its BM25 and dense ranks; the source passage of a
    synthetic query is kept in its list (replacing the last candidate) so the filters can judge it.

    Rows are kept per query id in ``work/candidates-<hash of corpus and retrieval>.json``: only
    queries not retrieved before are searched (a query id is a hash of its text and source)."""
    rc = config.retrieval
    path = candidate_cache(config, work)
    done: dict[str, dict] = _read_mapping(path, "candidate cache", "query id → candidates")
    missing = [q for q in queries if q["query_id"] not in done]
    if missing:
        qtexts = as_searched([q["query"] for q in missing], rs.normalize_text)
        runs: dict[str, list[list[tuple[str, float]]]] = {}
        if rc.bm25:
            runs["bm25"] = build_retriever("bm25", rs).search(qtexts, rc.depth)
        if rc.dense:
            dense = build_retriever(rc.dense, rs, batch_size=rc.batch_size, show_progress=True)
            runs["dense"] = dense.search(qtexts, rc.depth)
        for i, q in enumerate(tqdm(missing, desc="fuse", leave=False)):
            ranks = {name: {d: r for r, (d, _) in enumerate(run[i], 1)} for name, run in runs.items()}
            fused = [d for d, _ in reciprocal_rank_fusion([run[i] for run in runs.values()], k=rc.rrf_k,
                                                          top_n=rc.list_size)]
            source = q["source_id"]
            source_rank = fused.index(source) + 1 if source in fused else None
            if source and source_rank is None:
                fused[-1] = source
            done[q["query_id"]] = {
                "query_id": q["query_id"], "source_fused_rank": source_rank,
                "docs": [[d, ranks.get("bm25", {}).get(d), ranks.get("dense", {}).get(d)] for d in fused]}
        write_json_atomic(path, done)
    return [done[q["query_id"]] for q in queries]


def mine(config: MineConfig) -> Path:
    """Mine ``config``'s lists into ``config.output`` (+ ``stats.json``); returns the output folder.

    ``run_recipe`` checks the recipe's names (:meth:`MineConfig.check_names`) before calling this.
    """
    output = Path(config.output)
    check_writable(output, "output", folder=True)  # before hours of mining, not after
    work = output.parent / f".{output.name}.work"
    stats: dict = {"config": asdict(config)}
    rs = load_retrieval_set(config.corpus)
    qkey, _ = stage_keys(config)
    qstats: dict = {}
    queries = _cached_stage(work, "queries", qkey, lambda: {"rows": build_queries(config, rs, qstats, work),
                                                             "stats": qstats})
    stats.update(queries["stats"])
    queries = queries["rows"]
    if not queries:
        raise DataError(f"{config.corpus}: no training queries (check queries.split / queries.generate)")
    candidates = build_candidates(config, rs, queries, work)

    # The filters run as a funnel, cheapest first: the student filter needs only the dense run, so
    # a query it drops is never sent to the teacher.
    per_type: dict[str, dict] = {}
    for query_type, n in stats.get("generated_by_type", {}).items():
        per_type[query_type] = {"generated": n}
    funnel = [(name, k) for name, k in (("source_in_student_top_k", config.filter.source_in_student_top_k),
                                        ("source_top_k", config.filter.source_top_k)) if k is not None]
    for q in queries:
        row = per_type.setdefault(q["query_type"], {})
        row.setdefault("generated", 0 if q["source_id"] else None)
        row["mined"] = row.get("mined", 0) + 1
        for name, _ in funnel:
            row.setdefault(name, 0)
        row.setdefault("kept", 0)
    student_k = config.filter.source_in_student_top_k
    scored = []
    for q, c in zip(queries, candidates):
        if q["source_id"] and student_k is not None:
            dense_rank = next(r for d, _, r in c["docs"] if d == q["source_id"])
            if dense_rank is None or dense_rank > student_k:
                continue
            per_type[q["query_type"]]["source_in_student_top_k"] += 1
        elif student_k is not None:
            per_type[q["query_type"]]["source_in_student_top_k"] += 1  # no source: nothing to filter
        scored.append((q, c))

    ids, texts = rs.doc_texts()
    text_of = dict(zip(ids, texts))
    searched_text = dict(zip(ids, as_searched(texts, rs.normalize_text)))
    teacher = config.teacher.load(show_progress=True)
    pair_q, pair_p = [], []
    for qt, (_, c) in zip(as_searched([q["query"] for q, _ in scored], rs.normalize_text), scored):
        for d, _, _ in c["docs"]:
            pair_q.append(qt)
            pair_p.append(searched_text[d])
    scores = teacher.score(pair_q, pair_p).tolist() if pair_q else []

    rows, offset = [], 0
    source_ranks, spreads = [], []
    k = config.filter.source_top_k
    for q, c in scored:
        n = len(c["docs"])
        list_scores = scores[offset: offset + n]
        offset += n
        cands = [{"doc_id": d, "text": text_of[d], "teacher_score": s, "bm25_rank": b, "dense_rank": r}
                 for (d, b, r), s in zip(c["docs"], list_scores)]
        if q["source_id"]:
            order = sorted(range(n), key=lambda j: -list_scores[j])
            teacher_rank = 1 + [cands[j]["doc_id"] for j in order].index(q["source_id"])
            source_ranks.append(teacher_rank)
            if k is not None and teacher_rank > k:
                continue
        if k is not None:
            per_type[q["query_type"]]["source_top_k"] += 1
        per_type[q["query_type"]]["kept"] += 1
        spreads.append(max(list_scores) - min(list_scores))
        rows.append({**q, "candidates": cands})
    filtered = {"source_not_in_student_top_k": len(queries) - len(scored),
                "source_not_in_teacher_top_k": len(scored) - len(rows)}
    if not rows:
        raise DataError(f"{config.corpus}: every query was filtered out ({filtered})")
    save_lists(lists_from_rows(rows), output)
    stats.update({
        "lists": len(rows),
        "candidates_per_list": statistics.mean(len(r["candidates"]) for r in rows),
        "filtered": filtered,
        "teacher": {"identity": teacher.identity, "pairs": len(pair_q),
                    **{k_: getattr(teacher, k_) for k_ in ("hits", "misses", "forward_pairs")
                       if hasattr(teacher, k_)}},
        "teacher_score_spread": summary(spreads),
        "source_teacher_rank": summary(source_ranks),
        # synthetic queries whose source the retrievers missed (it was put into the list by hand)
        "source_not_retrieved": sum(1 for q, c in zip(queries, candidates)
                                    if q["source_id"] and c["source_fused_rank"] is None),
        "query_types": count(r["query_type"] for r in rows),
        # per query type: generated (by its generator) → mined (after dropping duplicates and
        # evaluation queries) → passing each filter in turn → kept as lists
        "per_query_type": per_type,
    })
    check = label_check(rows, rs.split_qrels(config.queries.split)) if config.queries.split else {}
    if check:
        stats["label_check"] = check
    write_json_atomic(output / "stats.json", stats)
    print(query_type_table(per_type))
    if check:
        print(format_label_check(check))
    return output
