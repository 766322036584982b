"""Issue 12 §8: the CapRetrieval, BEIR and lists loaders fed mutated files (truncated lines, wrong
types, non-finite numbers, duplicate and missing ids, other encodings) either fail with one line
naming a file of the input or return exactly what the clean input gives. Never a traceback of
another type, never different data."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.data.corpora import DataError, load_retrieval_set
from distill.data.lists import load_lists

# Every document and query is referenced, so that dropping one line is detectable; texts carry
# non-ASCII characters, so that another encoding is detectable.
CAP = {
    "candidates.jsonl": [{"id": "c1", "text": "Un café rouge"}, {"id": "c2", "text": "一只猫"},
                         {"id": "c3", "text": "a blue boat"}],
    "queries.jsonl": [{"id": "q1", "query": "café", "positives": [{"id": "c1", "score": 2}, {"id": "c3", "score": 0}]},
                      {"id": "q2", "query": "猫", "positives": [{"id": "c2", "score": 1}]}],
}
BEIR = {
    "corpus.jsonl": [{"_id": "d1", "title": "Café", "text": "cats purr"}, {"_id": "d2", "title": "", "text": "狗叫"},
                     {"_id": "d3", "title": "Boats", "text": "sail"}],
    "queries.jsonl": [{"_id": "q1", "text": "purring café"}, {"_id": "q2", "text": "barking 狗"}],
    "qrels/test.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq1\td3\t0\n",
}
LISTS = [{"query_id": f"q{i}", "query": f"requête {i}", "query_type": "keywords", "source_id": "",
          "candidates": [{"doc_id": f"d{j}", "text": f"passage {j} é", "teacher_score": float(j - i),
                          "bm25_rank": j + 1, "dense_rank": None} for j in range(3)]} for i in range(3)]

# JSON fields that must hold a string, a list, a grade, a score or a rank (empty strings are
# legal in places, e.g. a BEIR text beside a title, so the unit tests cover them instead)
REQUIRED_STR = {"id", "_id", "text", "query", "query_id", "doc_id"}
_WRONG_TYPES = [True, "x", [], {}]
_NON_FINITE = [float("inf"), float("-inf"), float("nan"), 1e400]
BAD_VALUES = {"str": [None, True, [], {}, [1]], "list": [None, True, "x", 3, {}],
              "grade": _WRONG_TYPES + _NON_FINITE + [1.7, -1],
              "score": _WRONG_TYPES + _NON_FINITE,  # null is legal there (unscored); 1.7 and -1 are scores
              "rank": _WRONG_TYPES + _NON_FINITE + [1.7, -1, 0]}
KINDS = {**dict.fromkeys(REQUIRED_STR, "str"), "positives": "list", "candidates": "list", "score": "grade",
         "teacher_score": "score", "bm25_rank": "rank", "dense_rank": "rank"}


def _kind(key: str, value) -> str | None:
    return KINDS.get(key)


def _paths(obj, prefix=()):
    """Every (path, kind) inside a JSON object whose value the mutation may replace."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            kind = _kind(key, value)
            if kind:
                yield prefix + (key,), kind
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, prefix + (i,))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    if value is _DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DELETE = object()


def _render(files: dict) -> dict[str, bytes]:
    out = {}
    for name, content in files.items():
        text = content if isinstance(content, str) else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in content)
        out[name] = text.encode("utf-8")
    return out


@st.composite
def mutated(draw, files: dict, droppable: tuple[str, ...]):
    """The clean files as bytes, then one mutation of one file."""
    name = draw(st.sampled_from(sorted(files)))
    content = files[name]
    rendered = _render(files)
    how = draw(st.sampled_from(["truncate", "value", "missing_key", "duplicate", "drop", "encoding"]))
    if isinstance(content, list) and how in ("value", "missing_key"):
        rows = json.loads(json.dumps(content))
        i = draw(st.integers(0, len(rows) - 1))
        targets = list(_paths(rows[i]))
        path, kind = draw(st.sampled_from(targets))
        optional = kind in ("score", "rank", "grade")  # legal when missing: null score or rank, grade 1
        value = _DELETE if how == "missing_key" and not optional else draw(st.sampled_from(BAD_VALUES[kind]))
        _set(rows[i], path, value)
        rendered[name] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        return rendered
    lines = rendered[name].decode("utf-8").splitlines(keepends=True)
    first = 1 if name.endswith(".tsv") else 0  # the header
    i = draw(st.integers(first, len(lines) - 1))
    if how == "truncate":
        line = lines[i].rstrip("\n")
        cut = draw(st.integers(0, max(0, len(line) - 1)))
        lines[i] = line[:cut] + "\n"
        if not line[:cut].strip():
            lines[i] = "{}\n" if not name.endswith(".tsv") else "x\n"  # a blank line is legal: cut into nothing
    elif how == "value" and name.endswith(".tsv"):
        fields = lines[i].rstrip("\n").split("\t")
        fields[2] = draw(st.sampled_from(["Infinity", "NaN", "-1", "1.7", "1e400", "x", "", "true"]))
        lines[i] = "\t".join(fields) + "\n"
    elif how == "duplicate" or (how == "missing_key" and name.endswith(".tsv")):
        lines.insert(i, lines[i])
    elif how == "drop" and name in droppable:
        del lines[i]
    elif how == "encoding":
        text = "".join(lines)
        codec = draw(st.sampled_from(["latin-1", "utf-16", "bom", "nul", "ff"]))
        if codec == "bom":
            return {**rendered, name: b"\xef\xbb\xbf" + text.encode("utf-8")}  # must load as the clean input
        if codec == "nul":
            return {**rendered, name: text.encode("utf-8").replace(b"\n", b"\x00\n", 1)}
        if codec == "ff":
            return {**rendered, name: text.encode("utf-8").replace(b"\n", b"\xff\n", 1)}
        return {**rendered, name: text.encode(codec, errors="replace")}  # every JSONL first line has an é
    else:  # a no-op draw: the clean input must load as itself
        pass
    rendered[name] = "".join(lines).encode("utf-8")
    return rendered


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def _retrieval_view(rs) -> tuple:
    return rs.corpus.to_list(), rs.queries.to_list(), rs.qrels, rs.types


def _check(load, root: Path, files: dict[str, bytes], clean):
    try:
        result = load()
    except DataError as err:
        message = str(err)
        assert "\n" not in message, message
        assert any(str(root / name) in message for name in files) or str(root) in message, message
        return
    assert result == clean


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _fuzz_set(clean_files: dict, droppable: tuple[str, ...]):
    base = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        clean_root = base / "clean"
        _write(clean_root, _render(clean_files))
        clean = _retrieval_view(load_retrieval_set(clean_root))

        @SETTINGS
        @given(mutated(clean_files, droppable))
        def run(files):
            root = Path(tempfile.mkdtemp(dir=base))
            _write(root, files)
            _check(lambda: _retrieval_view(load_retrieval_set(root)), root, files, clean)
            shutil.rmtree(root)

        run()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_capretrieval_loader_under_mutation():
    _fuzz_set(CAP, droppable=("candidates.jsonl",))


def test_beir_loader_under_mutation():
    _fuzz_set(BEIR, droppable=("corpus.jsonl", "queries.jsonl"))


def test_lists_loader_under_mutation():
    base = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        (base / "clean.jsonl").write_bytes(_render({"l": LISTS})["l"])
        clean = load_lists(base / "clean.jsonl").to_list()

        @SETTINGS
        @given(mutated({"lists.jsonl": LISTS}, droppable=()))
        def run(files):
            root = Path(tempfile.mkdtemp(dir=base))
            _write(root, files)
            _check(lambda: load_lists(root / "lists.jsonl").to_list(), root, files, clean)
            shutil.rmtree(root)

        run()
    finally:
        shutil.rmtree(base, ignore_errors=True)
