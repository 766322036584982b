"""One data set × one first-stage retriever (+ optional teacher rerank) → a Report.

The one evaluation path: `distill evaluate` calls :func:`evaluate`, training calls
:func:`evaluate_encoder` with its in-memory student; both end in :func:`evaluate_retriever`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from distill.data.corpora import RetrievalSet, load_retrieval_set
from distill.evaluation.metrics import Run, evaluate_run, mean_scores
from distill.evaluation.report import Report
from distill.paths import cache_root
from distill.retrieval import Retriever, as_searched, build_retriever

if TYPE_CHECKING:
    from students.dual_encoder import DualEncoder
    from teachers.base import Teacher

PRECISIONS = {"auto": None, "bf16": True, "fp32": False}  # --precision → load_student(bf16=...)

@dataclass
class EvalConfig:
    """`distill evaluate` options; validated on construction."""

    model: str
    dataset: str
    split: str = "test"
    rerank: str | None = None
    depth: int = 50
    batch_size: int = 64
    k: int = 100
    normalize_text: bool | None = None  # None: the data set's own convention
    show_progress: bool = True
    teacher_cache: str | None = field(default=None)
    # the encoder's: fp32 by default (the measuring stick is exact: fp32 reproduces the official
    # CapRetrieval top 10 for every query, bf16 autocast changes it for 80-145 of 377); bf16 or auto
    # (bf16 where the hardware has bf16 units) are explicit choices, and every report says which ran
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.depth <= 0:
            raise ValueError(f"--depth must be positive, got {self.depth}")
        if self.k < 100:
            raise ValueError(f"retrieval depth k must be >= 100 for recall@100, got {self.k}")
        if self.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {self.batch_size}")


def retrieve(retriever: Retriever, query_ids: list[str], queries: list[str], k: int) -> Run:
    hits = retriever.search(queries, k)
    return dict(zip(query_ids, hits))


def rerank(run: Run, teacher: "Teacher", queries: dict[str, str], docs: dict[str, str], depth: int,
           show_progress: bool = False) -> Run:
    """Teacher scores the top ``depth`` of each ranking; those go first in teacher order, the rest
    keep their first-stage order below them (scores shifted so the run stays score-sorted)."""
    qids = list(run)
    pairs_q, pairs_p, spans = [], [], []
    for qid in qids:
        head = run[qid][:depth]
        spans.append(len(head))
        pairs_q += [queries[qid]] * len(head)
        pairs_p += [docs[d] for d, _ in head]
    scores = teacher.score(pairs_q, pairs_p).tolist() if pairs_q else []
    out: Run = {}
    offset = 0
    for qid, n in tqdm(list(zip(qids, spans)), desc="rerank", disable=not show_progress, leave=False):
        head = [(d, s) for (d, _), s in zip(run[qid][:n], scores[offset: offset + n])]
        offset += n
        head.sort(key=lambda x: -x[1])
        floor = min((s for _, s in head), default=0.0)
        tail = run[qid][n:]
        # tail keeps its order strictly below the reranked head
        tail = [(d, floor - 1.0 - i) for i, (d, _) in enumerate(tail)]
        out[qid] = head + tail
    return out


def evaluate_retriever(retriever: Retriever, rs: RetrievalSet, split: str = "test", *, k: int = 100,
                       normalize: bool | None = None, teacher: "Teacher | None" = None, depth: int = 50,
                       show_progress: bool = False) -> tuple[Report, Run]:
    normalize = rs.normalize_text if normalize is None else normalize
    qrels = rs.split_qrels(split)
    qids, qtexts = rs.query_texts(split)
    qtexts = as_searched(qtexts, normalize)
    start = time.perf_counter()
    run = retrieve(retriever, qids, qtexts, k)
    if teacher is not None:
        doc_ids, doc_texts = rs.doc_texts()
        docs = dict(zip(doc_ids, as_searched(doc_texts, normalize)))
        run = rerank(run, teacher, dict(zip(qids, qtexts)), docs, depth, show_progress)
    seconds = time.perf_counter() - start
    per_query = evaluate_run(run, qrels)
    by_type = {t: mean_scores(per_query, ids) for t, ids in rs.types.items()}
    report = Report(
        dataset=rs.name, split=split, metrics=mean_scores(per_query),
        by_type={t: m for t, m in by_type.items() if m["num_queries"]},
        per_query={q: s.as_dict() for q, s in per_query.items()},
        seconds=seconds, notes=list(rs.notes),
    )
    return report, run


def encoder_precision(encoder) -> str:
    """What an encoder's ``encode`` runs in: "bf16" (autocast) or "fp32"."""
    from distill.hardware import resolve_autocast

    return "bf16" if resolve_autocast(encoder.device, encoder.bf16) else "fp32"


def evaluate_encoder(encoder: "DualEncoder", dataset: str | RetrievalSet, split: str = "test",
                     batch_size: int = 64, show_progress: bool = False, precision: str = "fp32") -> Report:
    """Evaluate an in-memory student (training calls this; no second copy of the evaluation), in
    ``precision`` whatever the student trains in."""
    rs = dataset if isinstance(dataset, RetrievalSet) else load_retrieval_set(dataset)
    trained_in, encoder.bf16 = encoder.bf16, PRECISIONS[precision]
    try:
        retriever = build_retriever(encoder, rs, batch_size=batch_size, show_progress=show_progress)
        report, _ = evaluate_retriever(retriever, rs, split, show_progress=show_progress)
        report.precision = encoder_precision(encoder)
    finally:
        encoder.bf16 = trained_in
    report.model = getattr(encoder, "name", "student")
    return report


def evaluate(config: EvalConfig, run_file: Path | None = None) -> Report:
    """`distill evaluate`: load, retrieve, optionally rerank, score."""
    rs = load_retrieval_set(config.dataset)
    normalize = rs.normalize_text if config.normalize_text is None else config.normalize_text
    retriever = build_retriever(config.model, rs, normalize=normalize, batch_size=config.batch_size,
                                show_progress=config.show_progress, bf16=PRECISIONS[config.precision])
    teacher = None
    if config.rerank:
        from teachers import default_cache_path, load_teacher

        cache = config.teacher_cache or default_cache_path()
        teacher = load_teacher(config.rerank, batch_size=config.batch_size, cache=cache,
                               show_progress=config.show_progress)
    report, run = evaluate_retriever(retriever, rs, config.split, k=config.k, normalize=normalize,
                                     teacher=teacher, depth=config.depth, show_progress=config.show_progress)
    report.model = config.model
    report.rerank = f"{config.rerank}@{config.depth}" if config.rerank else None
    encoder = getattr(retriever, "encoder", None)
    report.precision = encoder_precision(encoder) if encoder is not None else "n/a (BM25)"
    if run_file is not None:
        from distill.retrieval.trec import write_run

        write_run(run, run_file, tag=config.model)
    return report
