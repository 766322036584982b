"""The training-list schema: one row per query with its teacher-scored candidate list.

Row: ``query_id, query, query_type, source_id, candidates[{doc_id, text, teacher_score,
bm25_rank, dense_rank}]``. ``teacher_score`` may be null (raw lists: the training module scores
them through the teacher and its cache); ranks are null where that retriever did not return the
document; ``source_id`` is empty for queries that were not generated from a passage.

Lists live on disk as a Hugging Face dataset (``save_to_disk``) or, for hand-made input, as JSONL.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from datasets import Dataset, Features, List, Value, load_from_disk

from distill.atomic import swap_folder
from distill.data.corpora import DataError, iter_jsonl, require_str

CANDIDATE = {
    "doc_id": Value("string"),
    "text": Value("string"),
    "teacher_score": Value("float32"),
    "bm25_rank": Value("int32"),
    "dense_rank": Value("int32"),
}
LIST_FEATURES = Features({
    "query_id": Value("string"),
    "query": Value("string"),
    "query_type": Value("string"),
    "source_id": Value("string"),
    "candidates": List(CANDIDATE),
})


def validate_row(row: dict, where: str) -> dict:
    """Check one row; ``where`` is ``file:line`` for JSONL input or ``dir[row i]`` for datasets."""
    def bad(field: str, what: str) -> DataError:
        return DataError(f"{where}: {field}: {what}")

    for key in ("query_id", "query"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise bad(key, "missing or empty")
    for key in ("query_type", "source_id"):
        if row.get(key) is None:
            row[key] = "" if key == "source_id" else "unknown"
        elif not isinstance(row[key], str):
            raise bad(key, "expected a string")
    cands = row.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise bad("candidates", "missing or empty list")
    seen = set()
    for i, cand in enumerate(cands):
        if not isinstance(cand, dict):
            raise bad(f"candidates[{i}]", "expected an object")
        for key in ("doc_id", "text"):
            if not isinstance(cand.get(key), str) or not cand[key]:
                raise bad(f"candidates[{i}].{key}", "missing or empty")
        if cand["doc_id"] in seen:
            raise bad(f"candidates[{i}].doc_id", f"duplicate document {cand['doc_id']!r} in one list")
        seen.add(cand["doc_id"])
        score = cand.get("teacher_score")
        if score is not None and (not isinstance(score, (int, float)) or not math.isfinite(score)):
            raise bad(f"candidates[{i}].teacher_score", f"expected a finite number, got {score!r}")
        for key in ("bm25_rank", "dense_rank"):
            rank = cand.get(key)
            if rank is not None and (not isinstance(rank, int) or rank < 1):
                raise bad(f"candidates[{i}].{key}", f"expected a rank >= 1 or null, got {rank!r}")
            cand.setdefault(key, None)
        cand.setdefault("teacher_score", None)
    return row


def lists_from_rows(rows: Iterable[dict]) -> Dataset:
    return Dataset.from_list(list(rows), features=LIST_FEATURES)


def load_lists(path: str | Path) -> Dataset:
    """A saved dataset folder or a ``.jsonl`` file of rows; every row validated."""
    path = Path(path)
    if path.is_dir():
        try:
            ds = load_from_disk(str(path))
        except Exception as err:  # datasets raises several types for a folder that is not a dataset
            raise DataError(f"{path}: not a saved training-list dataset ({type(err).__name__}: {err})") from None
        missing = set(LIST_FEATURES) - set(ds.column_names)
        if missing:
            raise DataError(f"{path}: columns missing: {', '.join(sorted(missing))}")
        seen: dict[str, int] = {}
        for i, qid in enumerate(ds["query_id"]):
            if qid in seen:
                raise DataError(f"{path}[row {i}]: query_id: duplicate {qid!r} (first at row {seen[qid]})")
            seen[qid] = i
        return ds
    if path.suffix == ".jsonl" and path.is_file():
        rows, seen = [], {}
        for lineno, obj in iter_jsonl(path):
            row = validate_row(obj, f"{path}:{lineno}")
            qid = require_str(row, "query_id", path, lineno)
            if qid in seen:
                raise DataError(f"{path}:{lineno}: query_id: duplicate {qid!r} (first at line {seen[qid]})")
            seen[qid] = lineno
            rows.append(row)
        if not rows:
            raise DataError(f"{path}: no lists")
        return lists_from_rows(rows)
    raise DataError(f"{path}: expected a saved dataset folder or a .jsonl file of lists")


def save_lists(ds: Dataset, path: str | Path) -> Path:
    """Save atomically: write beside the target, then swap it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        ds.save_to_disk(str(tmp))
        swap_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def split_by_query(ds: Dataset, dev_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Held-out dev lists, chosen by query id with a seeded hash so the split is stable across runs."""
    import hashlib

    if not 0 <= dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")

    def is_dev(qid: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction

    flags = [is_dev(q) for q in ds["query_id"]]
    train = [i for i, f in enumerate(flags) if not f]
    dev = [i for i, f in enumerate(flags) if f]
    return ds.select(train), ds.select(dev)
