"""CapRetrieval and BEIR folders → one schema of `datasets.Dataset`s, and the named evaluation sets.

Common schema:
- corpus:  ``doc_id`` (str), ``title`` (str), ``text`` (str)
- queries: ``query_id`` (str), ``text`` (str)
- qrels:   per split, ``{query_id: {doc_id: relevance}}`` (graded ints; 0 = judged non-relevant)
- types:   ``{type_name: [query_id, ...]}`` where the set defines query types (CapRetrieval)

Every problem in a file is reported as one line ``file:line: field: what is wrong``. Files are
UTF-8 (a leading byte-order mark, as spreadsheet tools write, is accepted). Relevance grades follow
one rule in both formats: non-negative integers; a number written with a zero fraction (``1.0``,
as spreadsheet exports write) is that integer; anything else (``1.7``, ``-1``, ``Infinity``, ``NaN``,
``true``) is an error. A split that judges no query relevant would measure nothing: an error too.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from datasets import Dataset

PUBLISHED_AT = {
    "capretrieval": "github.com/lxucs/CapRetrieval (dataset/)",
    "capretrieval-en": "github.com/lxucs/CapRetrieval (dataset/, English translation)",
    "scifact": "the BEIR benchmark release (scifact.zip)",
    "nfcorpus": "the BEIR benchmark release (nfcorpus.zip)",
}
NAMED_SETS = {
    "capretrieval": Path("capretrieval/CapRetrieval"),
    "capretrieval-en": Path("capretrieval/CapRetrievalEn"),
    "scifact": Path("beir/scifact"),
    "nfcorpus": Path("beir/nfcorpus"),
}
LANGUAGES = {"capretrieval": "zh"}


class DataError(ValueError):
    """Bad input data; the message is one line naming file, line and field."""


@dataclass
class RetrievalSet:
    name: str
    path: Path
    corpus: Dataset
    queries: Dataset
    qrels: dict[str, dict[str, dict[str, int]]]
    types: dict[str, list[str]] = field(default_factory=dict)
    language: str = "en"
    notes: list[str] = field(default_factory=list)
    # CapRetrieval's official evaluation lower-cases and collapses white space before encoding.
    normalize_text: bool = False

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)

    def split_qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.qrels:
            raise DataError(f"{self.path}: no split {split!r}; available: {', '.join(self.splits)}")
        return self.qrels[split]

    def doc_texts(self) -> tuple[list[str], list[str]]:
        """Doc ids and the text to encode: ``title + ' ' + text`` as BEIR's own evaluation does."""
        ids = self.corpus["doc_id"]
        texts = [f"{t} {x}".strip() if t else x for t, x in zip(self.corpus["title"], self.corpus["text"])]
        return ids, texts

    def query_texts(self, split: str) -> tuple[list[str], list[str]]:
        """Ids and texts of the split's queries that have at least one positive judgement (at least
        one, or the evaluation would report 0.00 over 0 queries)."""
        qrels = self.split_qrels(split)
        keep = [(qid, text) for qid, text in zip(self.queries["query_id"], self.queries["text"])
                if any(rel > 0 for rel in qrels.get(qid, {}).values())]
        if not keep:
            raise DataError(f"{self.path}: split {split!r} judges no query relevant (no grade > 0); "
                            "an evaluation on it would measure nothing")
        return [q for q, _ in keep], [t for _, t in keep]


def data_root() -> Path:
    """``$DISTILL_DATA`` when set, else ``../shared/data`` beside the repository."""
    env = os.environ.get("DISTILL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def locate_retrieval_set(name_or_path: str | Path) -> tuple[Path, str]:
    """``(folder, name)`` of a named set or a folder, without reading it (recipes check names up front)."""
    key = str(name_or_path).lower()
    if key in NAMED_SETS:
        path = data_root() / NAMED_SETS[key]
        if not path.is_dir():
            raise DataError(
                f"data set {key!r} not found: expected at {path} (set $DISTILL_DATA to the data root); "
                f"it is published at {PUBLISHED_AT[key]}"
            )
        return path, key
    path = Path(name_or_path)
    if not path.is_dir():
        raise DataError(
            f"{name_or_path!r} is neither a known data set ({', '.join(NAMED_SETS)}) nor a folder"
        )
    return path, path.name


def load_retrieval_set(name_or_path: str | Path) -> RetrievalSet:
    """Load a named set (capretrieval, capretrieval-en, scifact, nfcorpus) or a folder in either format."""
    path, name = locate_retrieval_set(name_or_path)
    if (path / "candidates.jsonl").is_file():
        rs = _load_capretrieval(path, name)
    elif (path / "corpus.jsonl").is_file():
        rs = _load_beir(path, name)
    else:
        raise DataError(f"{path}: neither a CapRetrieval folder (candidates.jsonl) nor a BEIR folder (corpus.jsonl)")
    rs.language = LANGUAGES.get(name, _guess_language(rs))
    return rs


def _guess_language(rs: RetrievalSet) -> str:
    sample = "".join(rs.corpus["text"][:50])
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in sample)
    return "zh" if cjk > 0.2 * max(len(sample), 1) else "en"


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, a leading BOM dropped; bytes that are not UTF-8 text
    (another encoding, a binary file) are a one-line DataError naming file and line."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                f"{err.start + 1}); save the file as UTF-8") from None
            if "\x00" in line:
                raise DataError(f"{path}:{lineno}: binary data (a NUL byte), expected UTF-8 text")
            yield lineno, line


def parse_grade(value, where: str, text: bool = False) -> int:
    """One rule for CapRetrieval ``score`` and BEIR qrels: a non-negative integer (``1.0`` is 1).
    ``text``: the value is a TSV field (a string to parse); in JSON a string is the wrong type."""
    number = value
    if text and isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                raise DataError(f"{where}: expected an integer >= 0 (a relevance grade), got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise DataError(f"{where}: expected an integer >= 0 (a relevance grade), got {value!r}")
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise DataError(f"{where}: expected an integer >= 0 (a relevance grade), got {value!r}")
        number = int(number)
    if number < 0:
        raise DataError(f"{where}: expected an integer >= 0 (a relevance grade), got {value!r}")
    return number


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; malformed JSON is a one-line DataError."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def require_str(obj: dict, key: str, path: Path, lineno: int, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        raise DataError(f"{path}:{lineno}: {key}: missing")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: {key}: expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{path}:{lineno}: {key}: empty")
    return value


def _unique(seen: dict[str, int], key: str, path: Path, lineno: int, field_name: str) -> None:
    if key in seen:
        raise DataError(f"{path}:{lineno}: {field_name}: duplicate id {key!r} (first at line {seen[key]})")
    seen[key] = lineno


def _read_corpus(path: Path, id_key: str) -> Dataset:
    seen: dict[str, int] = {}
    ids, titles, texts = [], [], []
    for lineno, obj in iter_jsonl(path):
        doc_id = require_str(obj, id_key, path, lineno)
        _unique(seen, doc_id, path, lineno, id_key)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise DataError(f"{path}:{lineno}: title: expected a string, got {type(title).__name__}")
        text = require_str(obj, "text", path, lineno, allow_empty=bool(title))
        ids.append(doc_id)
        titles.append(title)
        texts.append(text)
    if not ids:
        raise DataError(f"{path}: empty corpus (no documents)")
    return Dataset.from_dict({"doc_id": ids, "title": titles, "text": texts})


def _load_capretrieval(path: Path, name: str) -> RetrievalSet:
    corpus = _read_corpus(path / "candidates.jsonl", "id")
    doc_ids = set(corpus["doc_id"])
    qpath = path / "queries.jsonl"
    if not qpath.is_file():
        raise DataError(f"{path}: queries.jsonl missing")
    seen: dict[str, int] = {}
    qids, qtexts, qrels = [], [], {}
    for lineno, obj in iter_jsonl(qpath):
        qid = require_str(obj, "id", qpath, lineno)
        _unique(seen, qid, qpath, lineno, "id")
        text = require_str(obj, "query", qpath, lineno)
        if "positives" not in obj:  # required (may be []): a dropped key must not read as "no positives"
            raise DataError(f"{qpath}:{lineno}: positives: missing")
        positives = obj["positives"]
        if not isinstance(positives, list):
            raise DataError(f"{qpath}:{lineno}: positives: expected a list")
        judged: dict[str, int] = {}
        for i, pos in enumerate(positives):
            if not isinstance(pos, dict) or "id" not in pos:
                raise DataError(f"{qpath}:{lineno}: positives[{i}].id: missing")
            doc = str(pos["id"])
            if doc not in doc_ids:
                raise DataError(f"{qpath}:{lineno}: positives[{i}].id: unknown document {doc!r}")
            if doc in judged:
                raise DataError(f"{qpath}:{lineno}: positives[{i}].id: duplicate document {doc!r}")
            judged[doc] = parse_grade(pos.get("score", 1), f"{qpath}:{lineno}: positives[{i}].score")
        qids.append(qid)
        qtexts.append(text)
        qrels[qid] = judged
    if not qids:
        raise DataError(f"{qpath}: no queries")
    if not any(rel > 0 for judged in qrels.values() for rel in judged.values()):
        raise DataError(f"{qpath}: positives: no query has a positive judgement; an evaluation would measure nothing")
    queries = Dataset.from_dict({"query_id": qids, "text": qtexts})
    types, notes = _read_types(path, name, dict(zip(qtexts, qids)), qids)
    return RetrievalSet(name, path, corpus, queries, {"test": qrels}, types, notes=notes, normalize_text=True)


def normalize_text(text: str) -> str:
    """Lower-case and collapse white space, as the official CapRetrieval evaluation does."""
    return " ".join(text.split()).lower()


def _norm_query(text: str) -> str:
    return " ".join(text.replace("+", " ").split()).lower()


def _read_types(path: Path, name: str, by_text: dict[str, str], qids: list[str]) -> tuple[dict, list[str]]:
    """types.json maps type → query *texts* ('+' joins conjunctions). CapRetrievalEn has none of its
    own: it shares ids with CapRetrieval, so the sibling folder's types are mapped through the ids."""
    tpath = path / "types.json"
    if tpath.is_file():
        lookup = {_norm_query(t): q for t, q in by_text.items()}
    else:
        sibling = path.parent / "CapRetrieval"
        tpath = sibling / "types.json"
        if not (tpath.is_file() and (sibling / "queries.jsonl").is_file()) or sibling == path:
            return {}, []
        zh = {_norm_query(require_str(o, "query", sibling / "queries.jsonl", n)): str(o["id"])
              for n, o in iter_jsonl(sibling / "queries.jsonl")}
        own = set(qids)
        lookup = {t: q for t, q in zh.items() if q in own}
    try:
        raw = json.loads("".join(line for _, line in iter_lines(tpath)))
    except json.JSONDecodeError as err:
        raise DataError(f"{tpath}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{tpath}:1: expected an object of type → list of query texts")
    types: dict[str, list[str]] = {}
    missing = []
    for type_name, texts in raw.items():
        if not isinstance(texts, list):
            raise DataError(f"{tpath}: {type_name}: expected a list of query texts")
        ids = []
        for text in texts:
            qid = lookup.get(_norm_query(str(text)))
            if qid is None:
                missing.append(str(text))
            else:
                ids.append(qid)
        types[type_name] = ids
    notes = []
    if missing:
        # Not an input error: the official types list names a few queries the released set lacks.
        notes.append(f"{tpath}: {len(missing)} typed queries are not in the query file: {', '.join(missing)}")
    return types, notes


def _load_beir(path: Path, name: str) -> RetrievalSet:
    corpus = _read_corpus(path / "corpus.jsonl", "_id")
    doc_ids = set(corpus["doc_id"])
    qpath = path / "queries.jsonl"
    if not qpath.is_file():
        raise DataError(f"{path}: queries.jsonl missing")
    seen: dict[str, int] = {}
    qids, qtexts = [], []
    for lineno, obj in iter_jsonl(qpath):
        qid = require_str(obj, "_id", qpath, lineno)
        _unique(seen, qid, qpath, lineno, "_id")
        qids.append(qid)
        qtexts.append(require_str(obj, "text", qpath, lineno))
    known_queries = set(qids)
    qrels = {}
    qrel_dir = path / "qrels"
    for tsv in sorted(qrel_dir.glob("*.tsv")) if qrel_dir.is_dir() else []:
        qrels[tsv.stem] = _read_qrels(tsv, known_queries, doc_ids)
    if not qrels:
        raise DataError(f"{qrel_dir}: no qrels/*.tsv files")
    queries = Dataset.from_dict({"query_id": qids, "text": qtexts})
    return RetrievalSet(name, path, corpus, queries, qrels)


def _read_qrels(path: Path, queries: set[str], docs: set[str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    judgements = 0
    for lineno, line in iter_lines(path):
        row = line.rstrip("\r\n").split("\t")
        if not "".join(row).strip():
            continue
        if lineno == 1 and row[0] == "query-id":
            continue
        if len(row) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(row)}")
        qid, doc, score = row
        if qid not in queries:
            raise DataError(f"{path}:{lineno}: query-id: unknown query {qid!r}")
        if doc not in docs:
            raise DataError(f"{path}:{lineno}: corpus-id: unknown document {doc!r}")
        rel = parse_grade(score, f"{path}:{lineno}: score", text=True)
        if doc in qrels.get(qid, {}):
            raise DataError(f"{path}:{lineno}: corpus-id: duplicate judgement of {doc!r} for query {qid!r}")
        qrels.setdefault(qid, {})[doc] = rel
        judgements += 1
    if not judgements:
        raise DataError(f"{path}: no judgements (empty or header only); an evaluation would measure nothing")
    return qrels
