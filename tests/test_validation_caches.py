"""Issue 12 §4: a corrupt score cache or stage cache is moved aside, reported in one line, rebuilt."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_teacher_cache import CountingTeacher, pairs

from teachers.cache import CachedTeacher


def _filled(path: Path, n: int = 3000) -> torch.Tensor:
    with CachedTeacher(CountingTeacher(), path) as cached:
        return cached.score(*pairs(n))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "garbage_tail"])
def test_corrupt_score_cache_is_moved_aside_and_rescored(tmp_path, capsys, damage):
    path = tmp_path / "scores.sqlite"
    expected = _filled(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a database, just bytes " * 400)
    else:  # a valid header, pages overwritten
        path.write_bytes(data[:4096] + b"\xde\xad\xbe\xef" * ((len(data) - 4096) // 4))
    inner = CountingTeacher()
    with CachedTeacher(inner, path) as cached:
        scores = cached.score(*pairs(3000))
    torch.testing.assert_close(scores, expected, atol=0, rtol=0)
    assert inner.forward == 3000  # rescored, nothing else lost
    err = [line for line in capsys.readouterr().err.splitlines() if "corrupt score cache" in line]
    assert len(err) == 1 and str(path) in err[0] and ".corrupt-" in err[0]
    assert len(list(tmp_path.glob("scores.sqlite.corrupt-*"))) == 1
    with CachedTeacher(CountingTeacher(), path) as again:  # the new file is healthy
        assert again.count() == 3000


def test_locked_is_not_mistaken_for_corrupt(tmp_path):
    import sqlite3

    from teachers.cache import _is_corrupt

    assert not _is_corrupt(sqlite3.OperationalError("database is locked"))


def test_corrupt_mining_stage_cache_is_named_moved_aside_and_rebuilt(tmp_path, capsys):
    from distill.mining.mine import _cached_stage

    work = tmp_path / ".lists.work"
    assert _cached_stage(work, "queries", "k1", lambda: {"rows": [1, 2]}) == {"rows": [1, 2]}
    stage = work / "queries.json"
    for bad in (b'{"key": "k1", "data": {"ro', b"\xff\xfe\x00garbage", b"[1, 2]"):
        stage.write_bytes(bad)
        built = []
        assert _cached_stage(work, "queries", "k1", lambda: built.append(1) or {"rows": [3]}) == {"rows": [3]}
        assert built == [1]
        err = capsys.readouterr().err
        assert str(stage) in err and "corrupt stage cache" in err and len(err.strip().splitlines()) == 1
        assert json.loads(stage.read_text())["data"] == {"rows": [3]}
    assert len(list(work.glob("queries.json.corrupt-*"))) == 3
