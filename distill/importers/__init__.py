"""Converters from packaged model formats to ordinary Hugging Face / sentence-transformers folders.

What the converters that build a folder once share: a cross-process build lock and the source
file's content hash (a reinstall of the same wheel changes only the mtime).
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def build_lock(dest: Path) -> Iterator[None]:
    """Serialise builders of one folder across processes, so the second waits and reuses the first's work."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the final rename still keeps concurrent builds from corrupting
        yield
        return
    with open(dest.parent / f".{dest.name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
