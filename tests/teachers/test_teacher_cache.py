"""The persistent score cache: hits, identity separation, dedup, concurrency and a real SIGKILL."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from teachers.base import Teacher
from teachers.cache import CachedTeacher

ROOT = Path(__file__).resolve().parents[2]


class CountingTeacher(Teacher):
    """Deterministic pseudo-scores from a hash of the pair; counts forward pairs."""

    name = "counting"

    def __init__(self, tag="a", batch_size=16):
        super().__init__(batch_size=batch_size)
        self.tag = tag
        self.forward = 0

    @property
    def identity(self):
        return f"counting:{self.tag}"

    def _score_batch(self, items):
        self.forward += len(items)
        digest = [hashlib.sha256(f"{self.tag}|{q}|{p}".encode()).digest() for q, p in items]
        return torch.tensor([int.from_bytes(d[:4], "little") / 2**28 - 8.0 for d in digest])


def pairs(n, offset=0):
    return [f"query {i % 37}" for i in range(offset, offset + n)], [f"passage {i}" for i in range(offset, offset + n)]


def test_second_call_is_served_from_cache(tmp_path):
    inner = CountingTeacher()
    cached = CachedTeacher(inner, tmp_path / "scores.sqlite", chunk_size=50)
    queries, passages = pairs(300)
    first = cached.score(queries, passages)
    assert inner.forward == 300 and cached.stats() == {"hits": 0, "misses": 300, "forward_pairs": 300}
    torch.testing.assert_close(first, inner.score(queries, passages), atol=0, rtol=0)
    inner.forward = 0

    second = cached.score(queries, passages)
    assert inner.forward == 0 and cached.forward_pairs == 300 and cached.hits == 300
    assert torch.equal(first, second) and second.dtype == torch.float32

    # A new process / object on the same file sees the same rows.
    reopened = CachedTeacher(CountingTeacher(), tmp_path / "scores.sqlite")
    assert torch.equal(reopened.score(queries, passages), first) and reopened.forward_pairs == 0
    assert reopened.identity == inner.identity
    with sqlite3.connect(tmp_path / "scores.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_partial_overlap_and_duplicates_score_only_new_distinct_pairs(tmp_path):
    inner = CountingTeacher()
    cached = CachedTeacher(inner, tmp_path / "c.sqlite", chunk_size=7)
    queries, passages = pairs(40)
    cached.score(queries[:25], passages[:25])
    inner.forward = 0
    # 40 pairs, 25 already cached, and every new pair repeated twice.
    q2, p2 = queries + queries[25:], passages + passages[25:]
    out = cached.score(q2, p2)
    assert inner.forward == 15 and cached.forward_pairs == 25 + 15
    assert cached.hits == 25 and cached.misses == 25 + 30
    torch.testing.assert_close(out, CountingTeacher().score(q2, p2), atol=0, rtol=0)
    assert cached.count() == 40
    assert cached.score([], []).shape == (0,)


def test_different_identity_misses(tmp_path):
    path = tmp_path / "shared.sqlite"
    queries, passages = pairs(20)
    a = CachedTeacher(CountingTeacher("a"), path)
    b = CachedTeacher(CountingTeacher("b"), path)
    sa = a.score(queries, passages)
    sb = b.score(queries, passages)
    assert b.hits == 0 and b.forward_pairs == 20 and not torch.equal(sa, sb)
    assert a.count() == 40


def test_errors_are_not_cached(tmp_path):
    class Broken(CountingTeacher):
        def _score_batch(self, items):
            return torch.full((len(items),), float("nan"))

    cached = CachedTeacher(Broken(), tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="non-finite"):
        cached.score(*pairs(5))
    assert cached.count() == 0
    with pytest.raises(ValueError, match="3 queries but 2 passages"):
        cached.score(["a", "b", "c"], ["x", "y"])


def test_load_teacher_cache_option(tmp_path):
    pytest.importorskip("transformers")
    from factories import make_cross_encoder, random_pairs
    from teachers import load_teacher

    make_cross_encoder(tmp_path / "model")
    teacher = load_teacher(tmp_path / "model", cache=tmp_path / "c.sqlite", bf16=False, max_length=64)
    assert isinstance(teacher, CachedTeacher) and "max_length=64" in teacher.identity
    queries, passages = random_pairs(12)
    first = teacher.score(queries, passages)
    again = load_teacher(tmp_path / "model", cache=tmp_path / "c.sqlite", bf16=False, max_length=64)
    assert torch.equal(again.score(queries, passages), first) and again.forward_pairs == 0
    other = load_teacher(tmp_path / "model", cache=tmp_path / "c.sqlite", bf16=False, max_length=32)
    other.score(queries, passages)
    assert other.hits == 0 and other.forward_pairs == 12


WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_teacher_cache import CountingTeacher, pairs
    from teachers.cache import CachedTeacher

    class Slow(CountingTeacher):
        def _score_batch(self, items):
            time.sleep({delay})
            return super()._score_batch(items)

    cached = CachedTeacher(Slow(batch_size=10), {db!r}, chunk_size=20)
    print("ready", flush=True)
    cached.score(*pairs({n}, offset={offset}))
    print("finished", flush=True)
    """
)


def _worker(tmp_path, db, n, offset=0, delay=0.02, name="worker.py"):
    script = tmp_path / name
    script.write_text(WORKER.format(root=str(ROOT), tests=str(Path(__file__).resolve().parent), db=str(db), n=n, offset=offset, delay=delay))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(db) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'scores'").fetchone() is None:
            return 0  # the worker has created the file but not yet the table
        return conn.execute("SELECT count(*) FROM scores").fetchone()[0]
    finally:
        conn.close()


def test_sigkill_mid_run_keeps_committed_chunks(tmp_path):
    db, total = tmp_path / "killed.sqlite", 2000
    proc = _worker(tmp_path, db, total)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"worker ended before it was killed: {proc.stderr.read()}")
            if db.exists() and _rows(db) >= 100:  # at least five committed chunks
                break
            time.sleep(0.05)
        else:
            pytest.fail("worker committed no chunk in 120 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    cached_rows = _rows(db)
    assert 0 < cached_rows < total
    assert cached_rows % 20 == 0  # only whole committed chunks survive

    inner = CountingTeacher()
    resumed = CachedTeacher(inner, db, chunk_size=20)
    out = resumed.score(*pairs(total))
    assert resumed.forward_pairs == inner.forward == total - cached_rows
    assert resumed.hits == cached_rows
    torch.testing.assert_close(out, CountingTeacher().score(*pairs(total)), atol=0, rtol=0)


def test_concurrent_writers_share_one_file(tmp_path):
    db = tmp_path / "shared.sqlite"
    # Overlapping ranges: both processes write some of the same pairs.
    procs = [_worker(tmp_path, db, 300, offset=0, delay=0.001, name="w0.py"),
             _worker(tmp_path, db, 300, offset=150, delay=0.001, name="w1.py")]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert "finished" in out
    assert _rows(db) == 450
    check = CachedTeacher(CountingTeacher(), db)
    torch.testing.assert_close(check.score(*pairs(450)), CountingTeacher().score(*pairs(450)), atol=0, rtol=0)
    assert check.forward_pairs == 0


def test_pickles_for_worker_processes_and_threads(tmp_path):
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    cached = CachedTeacher(CountingTeacher(), tmp_path / "c.sqlite")
    queries, passages = pairs(30)
    first = cached.score(queries, passages)
    clone = pickle.loads(pickle.dumps(cached))
    assert torch.equal(clone.score(queries, passages), first) and clone.hits == 30
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda k: cached.score(*pairs(20, offset=10 * k)), range(4)))
    for k, out in enumerate(outs):
        torch.testing.assert_close(out, CountingTeacher().score(*pairs(20, offset=10 * k)), atol=0, rtol=0)
