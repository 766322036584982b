"""The training-list schema: one row per query with its teacher-scored candidate list.

Row: ``query_id, query, query_type, source_id, candidates[{doc_id, text, teacher_score,
bm25_rank, dense_rank}]``. ``teacher_score`` may be null (raw lists: the training module scores
them through the teacher and its cache); ranks are null where that retriever did not return the
document; ``source_id`` is empty for queries that were not generated from a passage.

Lists live on disk as a Hugging Face dataset (``save_to_disk``) or, for hand-made input, as JSONL.
Both go through :func:`validate_lists`, one vectorised (Arrow) check of the content rules, so a
million-candidate folder costs a few column scans, not a Python loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value, load_from_disk

from distill.atomic import atomic_folder, recover
from distill.data.corpora import DataError, iter_jsonl

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
# A score that does not fit float32 would be stored as inf, so the range is part of "finite".
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _first(mask: pa.Array) -> int | None:
    """Index of the first True in a boolean array (nulls count as False), or None."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _empty_str(col: pa.Array) -> pa.Array:
    return pc.or_(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(pc.fill_null(col, "")), ""))


def validate_lists(table: pa.Table, where: Callable[[int], str]) -> None:
    """The content rules of every lists source, as Arrow column operations.

    ``where(i)`` names row ``i`` (``file:line`` for JSONL, ``dir[row i]`` for a saved dataset).
    Raises a one-line :class:`DataError` at the first violation (``where: field: what``); null
    ``teacher_score`` means "unscored" (the teacher fills it), any other non-finite score is an error.
    """
    def bad(row: int, field: str, what: str) -> DataError:
        return DataError(f"{where(row)}: {field}: {what}")

    for key in ("query_id", "query"):
        col = table.column(key).combine_chunks()
        row = _first(_empty_str(col))
        if row is not None:
            raise bad(row, key, "missing or empty")
    qids = table.column("query_id").combine_chunks()
    counts = pc.value_counts(qids)
    dup = _first(pc.greater(counts.field("counts"), 1))
    if dup is not None:
        value = counts.field("values")[dup]
        rows = np.flatnonzero(pc.equal(qids, value).to_numpy(zero_copy_only=False))
        raise DataError(f"{where(int(rows[1]))}: query_id: duplicate {value.as_py()!r} (first at {where(int(rows[0]))})")

    cands = table.column("candidates").combine_chunks()
    row = _first(pc.or_kleene(pc.is_null(cands), pc.equal(pc.list_value_length(cands), 0)))
    if row is not None:
        raise bad(row, "candidates", "missing or empty list")
    flat = pc.list_flatten(cands)
    parent = pc.list_parent_indices(cands).to_numpy()
    offsets = cands.offsets.to_numpy()
    position = np.arange(len(parent)) - (offsets[parent] - offsets[0])

    def flat_error(i: int, field: str, what: str) -> DataError:
        return bad(int(parent[i]), f"candidates[{int(position[i])}].{field}", what)

    for key in ("doc_id", "text"):
        i = _first(pc.or_(pc.is_null(flat.field(key)), pc.equal(pc.fill_null(flat.field(key), ""), "")))
        if i is not None:
            raise flat_error(i, key, "missing or empty")
    score = flat.field("teacher_score")
    finite = pc.and_(pc.is_finite(score), pc.less_equal(pc.abs(score), FLOAT32_MAX))
    i = _first(pc.and_(pc.is_valid(score), pc.invert(pc.fill_null(finite, False))))
    if i is not None:
        raise flat_error(i, "teacher_score",
                         f"expected a finite float32 number or null (unscored), got {score[i].as_py()!r}")
    for key in ("bm25_rank", "dense_rank"):
        i = _first(pc.less(flat.field(key), 1))
        if i is not None:
            raise flat_error(i, key, f"expected a rank >= 1 or null, got {flat.field(key)[i].as_py()!r}")
    # duplicate documents inside one list: count (row, doc_id) pairs
    pairs = pa.table({"row": pa.array(parent), "doc_id": flat.field("doc_id")})
    grouped = pairs.group_by(["row", "doc_id"]).aggregate([("doc_id", "count")])
    j = _first(pc.greater(grouped.column("doc_id_count"), 1))
    if j is not None:
        row, doc = grouped.column("row")[j].as_py(), grouped.column("doc_id")[j].as_py()
        at = np.flatnonzero((parent == row) & (flat.field("doc_id").to_numpy(zero_copy_only=False) == doc))
        raise flat_error(int(at[1]), "doc_id", f"duplicate document {doc!r} in one list")


def _check_types(row: dict, where: str) -> dict:
    """JSONL rows only: the JSON types Arrow needs (a saved dataset has its schema already)."""
    def bad(field: str, what: str) -> DataError:
        return DataError(f"{where}: {field}: {what}")

    for key in ("query_id", "query", "query_type", "source_id"):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "query_id":
            row[key] = value = str(value)
        if value is not None and not isinstance(value, str):
            raise bad(key, f"expected a string, got {type(value).__name__}")
    row.setdefault("query_type", None)
    row.setdefault("source_id", None)
    if row["query_type"] is None:
        row["query_type"] = "unknown"
    if row["source_id"] is None:
        row["source_id"] = ""
    cands = row.get("candidates")
    if cands is not None and not isinstance(cands, list):
        raise bad("candidates", f"expected a list, got {type(cands).__name__}")
    for i, cand in enumerate(cands or []):
        if not isinstance(cand, dict):
            raise bad(f"candidates[{i}]", "expected an object")
        for key in ("doc_id", "text"):
            if cand.get(key) is not None and not isinstance(cand[key], str):
                raise bad(f"candidates[{i}].{key}", f"expected a string, got {type(cand[key]).__name__}")
        score = cand.get("teacher_score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise bad(f"candidates[{i}].teacher_score", f"expected a number or null, got {score!r}")
        for key in ("bm25_rank", "dense_rank"):
            rank = cand.get(key)
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)
                                     or not -2**31 <= rank < 2**31):
                raise bad(f"candidates[{i}].{key}", f"expected a rank >= 1 or null, got {rank!r}")
            cand.setdefault(key, None)
        cand.setdefault("teacher_score", None)
        if score is not None:
            cand["teacher_score"] = float(score)
    return row


def _jsonl_table(rows: list[dict]) -> pa.Table:
    # teacher_score as float64 first, so 1e39 is reported as itself rather than as float32 inf
    schema = LIST_FEATURES.arrow_schema
    cand = pa.struct([pa.field(k, pa.float64() if k == "teacher_score" else t.type)
                      for k, t in zip(CANDIDATE, pa.struct(schema.field("candidates").type.value_type).fields)])
    schema = schema.set(schema.get_field_index("candidates"), pa.field("candidates", pa.list_(cand)))
    keys = list(LIST_FEATURES)
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows], schema=schema)


def lists_from_rows(rows: Iterable[dict]) -> Dataset:
    return Dataset.from_list(list(rows), features=LIST_FEATURES)


def load_lists(path: str | Path) -> Dataset:
    """A saved dataset folder or a ``.jsonl`` file of rows; every row validated (one error names
    the file, the row or line, and the field)."""
    path = Path(path)
    if not path.exists():
        recover(path)  # a writer killed mid-swap may have left the old version aside
    if path.is_dir():
        try:
            ds = load_from_disk(str(path))
        except Exception as err:  # datasets raises several types for a folder that is not a dataset
            raise DataError(f"{path}: not a saved training-list dataset ({type(err).__name__}: {err})") from None
        if not isinstance(ds, Dataset):
            raise DataError(f"{path}: a DatasetDict, expected one saved training-list dataset")
        missing = set(LIST_FEATURES) - set(ds.column_names)
        if missing:
            raise DataError(f"{path}: columns missing: {', '.join(sorted(missing))}")
        try:
            table = ds.flatten_indices().data.table.select(list(LIST_FEATURES)).cast(LIST_FEATURES.arrow_schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
            raise DataError(f"{path}: columns do not match the training-list schema ({err})") from None
        if table.num_rows == 0:
            raise DataError(f"{path}: no lists")
        validate_lists(table, lambda i: f"{path}[row {i}]")
        return ds
    if path.suffix == ".jsonl" and path.is_file():
        rows, lines = [], []
        for lineno, obj in iter_jsonl(path):
            rows.append(_check_types(obj, f"{path}:{lineno}"))
            lines.append(lineno)
        if not rows:
            raise DataError(f"{path}: no lists")
        validate_lists(_jsonl_table(rows), lambda i: f"{path}:{lines[i]}")
        return lists_from_rows(rows)
    raise DataError(f"{path}: expected a saved dataset folder or a .jsonl file of lists")


def save_lists(ds: Dataset, path: str | Path) -> Path:
    """Save atomically: written beside the target, then swapped in (see :mod:`distill.atomic`)."""
    path = Path(path)
    with atomic_folder(path) as work:
        ds.save_to_disk(str(work))
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
