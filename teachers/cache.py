"""Persistent teacher-score cache: SQLite in WAL mode, shared by recipes and processes.

Key = sha256(teacher.identity \\0 query \\0 passage), so a change of weights, max length, precision
or head is a different key and never a stale hit. Missing pairs are scored in chunks and each chunk
is committed as soon as it is scored: a killed run loses at most one chunk and the file stays
readable (WAL commits are atomic). Many readers and writers may share one file; a writer waits up to
``timeout`` seconds for another's transaction. A file SQLite finds corrupt (truncated, overwritten)
is moved aside with one line on stderr and a fresh one started: its scores are simply recomputed.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

import torch

from distill.atomic import move_aside
from teachers.base import Teacher, check_pairs

# SQLite builds before 3.32 allow at most 999 bound parameters per statement.
_LOOKUP_CHUNK = 900

SCHEMA = "CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, score REAL NOT NULL) WITHOUT ROWID"


def pair_key(identity: str, query: str, passage: str) -> bytes:
    # surrogatepass: text read with errors="surrogateescape" must still hash, not crash.
    return hashlib.sha256(f"{identity}\0{query}\0{passage}".encode("utf-8", "surrogatepass")).digest()


class CachedTeacher(Teacher):
    """Wraps a teacher: cached pairs are read back, only missing (deduplicated) pairs are scored.

    Counters (cumulative over calls): ``hits`` and ``misses`` count input pairs found / not found,
    ``forward_pairs`` counts distinct pairs sent to the inner teacher.
    """

    def __init__(self, teacher: Teacher, path: str | Path, *, chunk_size: int = 256, timeout: float = 600.0):
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.inner = teacher
        self.path = Path(path).expanduser()
        self.chunk_size = int(chunk_size)
        self.timeout = float(timeout)
        self.name = getattr(teacher, "name", type(teacher).__name__)
        self.batch_size = getattr(teacher, "batch_size", None)
        self.max_length = getattr(teacher, "max_length", None)
        # One bar over the missing pairs instead of one per chunk from the inner teacher.
        self.show_progress = bool(getattr(teacher, "show_progress", False))
        if hasattr(teacher, "show_progress"):
            teacher.show_progress = False
        self.hits = self.misses = self.forward_pairs = 0
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()  # one connection, shared by the threads of a process
        self._connection()  # fail at load time, not mid-run, on an unwritable path

    @property
    def identity(self) -> str:
        return self.inner.identity

    # -- storage -------------------------------------------------------------------------------
    def _recovering(self, operation):
        """Run ``operation()``; if SQLite reports the file corrupt, move it aside and run it once more."""
        try:
            return operation()
        except sqlite3.DatabaseError as err:
            if not _is_corrupt(err):
                raise
            self._quarantine(err)
            return operation()

    def _quarantine(self, err: sqlite3.DatabaseError) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn = self._pid = None
        if self.path.exists():
            aside = move_aside(self.path, f"corrupt score cache ({err})")
            for suffix in ("-wal", "-shm"):  # SQLite's side files belong to the moved database
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): a child process opens its own.
        if self._conn is None or self._pid != os.getpid():
            try:
                self._conn, self._pid = self._open(), os.getpid()
            except sqlite3.DatabaseError as err:
                if not _is_corrupt(err):
                    raise
                self._quarantine(err)
                self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"score cache {self.path}: SQLite refused WAL mode (got {mode!r}); is it on a network filesystem?")
            # NORMAL in WAL mode: a committed chunk survives a killed process (only power loss may drop the last one).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(SCHEMA)
            conn.execute("SELECT key FROM scores LIMIT 1").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _lookup(self, keys: list[bytes]) -> dict[bytes, float]:
        return self._recovering(lambda: self._lookup_once(keys))

    def _lookup_once(self, keys: list[bytes]) -> dict[bytes, float]:
        conn, found = self._connection(), {}
        for i in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[i:i + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk))
        return found

    def _store(self, keys: list[bytes], scores: list[float]) -> None:
        self._recovering(lambda: self._store_once(keys, scores))

    def _store_once(self, keys: list[bytes], scores: list[float]) -> None:
        conn = self._connection()
        # IMMEDIATE takes the write lock up front, so concurrent writers queue on busy_timeout
        # instead of failing on a lock upgrade. OR IGNORE: another process may have written the same
        # pair meanwhile (same identity → same score).
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO scores (key, score) VALUES (?, ?)", zip(keys, scores))
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the statement failed before the transaction held anything, or the file is corrupt
            raise

    def count(self) -> int:
        """Rows in the cache file (all teachers)."""
        return int(self._recovering(lambda: self._connection().execute("SELECT count(*) FROM scores").fetchone()[0]))

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = self._pid = None

    def __enter__(self) -> "CachedTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # Picklable for spawned workers; the connection is reopened on first use.
        return {**self.__dict__, "_conn": None, "_pid": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.RLock())

    # -- protocol ------------------------------------------------------------------------------
    def _score_batch(self, items) -> torch.Tensor:
        queries, passages = zip(*items) if items else ((), ())
        return self.score(list(queries), list(passages))

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        with self._lock:
            return self._score(*check_pairs(queries, passages))

    def _score(self, queries: list[str], passages: list[str]) -> torch.Tensor:
        identity = self.identity
        keys = [pair_key(identity, q, p) for q, p in zip(queries, passages)]
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        found = self._lookup(list(first))
        todo = [i for key, i in first.items() if key not in found]
        hits = sum(1 for key in keys if key in found)
        self.hits += hits
        self.misses += len(keys) - hits
        # Length-sorted chunks keep the inner teacher's batches evenly filled across chunk borders.
        todo.sort(key=lambda i: -(len(queries[i]) + len(passages[i])))
        bar = None
        if self.show_progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"scoring ({self.name}, {hits} cached)", unit="pair", dynamic_ncols=True)
        try:
            for start in range(0, len(todo), self.chunk_size):
                idx = todo[start:start + self.chunk_size]
                scores = self.inner.score([queries[i] for i in idx], [passages[i] for i in idx])
                values = scores.detach().reshape(-1).to(torch.float32).tolist()
                chunk_keys = [keys[i] for i in idx]
                self._store(chunk_keys, values)
                self.forward_pairs += len(idx)
                found.update(zip(chunk_keys, values))
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return torch.tensor([found[key] for key in keys], dtype=torch.float32)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "forward_pairs": self.forward_pairs}


def _is_corrupt(err: sqlite3.DatabaseError) -> bool:
    """SQLite's "malformed" / "not a database" (not "locked" or "busy", which are waits, not damage)."""
    name = getattr(err, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or (
        not name and any(s in str(err) for s in ("malformed", "not a database")))
