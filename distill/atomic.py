"""Atomic writes: a reader sees the old file or folder or the new one, never half of either.

Dependency-free, so ``teachers/`` and ``students/`` may use it as they use ``distill.models``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def swap_folder(work: Path, dest: Path) -> None:
    """Move the finished folder ``work`` to ``dest`` (same file system), replacing any old one.

    ``rename`` cannot replace a non-empty folder, so the old one is moved aside first; readers that
    already opened files in it keep them (POSIX), new readers see the new folder.
    """
    work, dest = Path(work), Path(dest)
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
        os.replace(work, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, dest)


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON through a temporary file and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
