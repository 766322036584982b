"""Atomic writes: a reader sees the old file or folder or the new one, never half of either.

Work happens in a hidden sibling ``.NAME.tmp-<pid>-<random>`` (same file system, so the final
rename is atomic). A folder replaces an old one with one ``renameat2(RENAME_EXCHANGE)`` where the
kernel and file system offer it, so ``NAME`` is visible at every instant; elsewhere with two renames
(``NAME`` → ``.NAME.old-<pid>-<random>``, work → ``NAME``), and a kill between them is repaired by
:func:`recover` on the next write or read. Leftovers of killed writers (their pid no longer runs)
are removed then too. Files and folders are created with the process umask, like any other file.

Dependency-free, so ``teachers/`` and ``students/`` may use it as they use ``distill.models``.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Iterator

# Names written by this module carry the writer's pid; older releases wrote ``.NAME.<mkdtemp>`` and
# ``.NAME.old-<hex8>`` without one: those count as stale once they are an hour old.
_OURS = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}$")
_LEGACY = re.compile(r"\.(old-[0-9a-f]{8}|[a-z0-9_]{8}|tmp-[0-9a-f]{8})$")
LEGACY_STALE_AFTER = 3600.0

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _temp_path(dest: Path, kind: str) -> Path:
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _leftovers(dest: Path) -> Iterator[tuple[Path, str]]:
    """(path, kind) of hidden siblings of ``dest`` whose writer is gone; kind is ``tmp`` or ``old``."""
    prefix = f".{dest.name}."
    try:
        entries = list(os.scandir(dest.parent))
    except FileNotFoundError:
        return
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(dest.name) + 1:]
        ours = _OURS.fullmatch(rest)
        if ours:
            if not _alive(int(ours.group(2))):
                yield Path(entry.path), ours.group(1)
        elif _LEGACY.fullmatch(rest):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_STALE_AFTER:
                    yield Path(entry.path), "old" if rest.startswith(".old-") else "tmp"


def recover(dest: str | Path) -> list[str]:
    """Repair what killed writers of ``dest`` left: an old version moved aside while ``dest`` is
    missing is moved back; other leftovers are deleted. Returns one line per action."""
    dest = Path(dest)
    actions = []
    stale = sorted(_leftovers(dest), key=lambda pk: pk[0].stat().st_mtime if pk[0].exists() else 0)
    olds = [p for p, kind in stale if kind == "old"]
    if olds and not os.path.lexists(dest):
        with contextlib.suppress(OSError):
            os.rename(olds[-1], dest)  # fails harmlessly if another process restored it first
            actions.append(f"{dest}: restored the version an interrupted write had moved to {olds[-1].name}")
    for path, _ in stale:
        if not path.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        actions.append(f"{dest}: removed {path.name} left by an interrupted write")
    return actions


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_folder(work: Path, dest: Path) -> None:
    """Move the finished folder ``work`` to ``dest`` (same file system), replacing any old one.

    Readers that already opened files in the old folder keep them (POSIX); new readers see the new one.
    """
    work, dest = Path(work), Path(dest)
    if not os.path.lexists(dest):
        os.replace(work, dest)
        return
    if _exchange(work, dest):
        shutil.rmtree(work, ignore_errors=True)  # now holds the old version
        return
    old = _temp_path(dest, "old")
    os.replace(dest, old)
    os.replace(work, dest)  # a kill before this line is undone by recover()
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(dest: str | Path) -> Iterator[Path]:
    """Yield an empty work folder beside ``dest``; on success it replaces ``dest``, on error it goes."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest)
    work = _temp_path(dest, "tmp")
    os.mkdir(work)  # mode 0o777 minus the umask (mkdtemp would make it private)
    try:
        yield work
        swap_folder(work, dest)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """Yield a handle on a temporary sibling; on success it is flushed to disk and renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = _temp_path(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies (mkstemp: 0o600)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON through a temporary file and rename it into place."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def check_writable(path: str | Path, what: str, folder: bool = False) -> None:
    """Fail before the work starts if ``path`` cannot be written (one line naming it and ``what``,
    e.g. ``--output``): a folder where a file is expected or the reverse, a file as a parent, or a
    place the process may not write (probed by creating a file: permission bits do not bind root)."""
    path = Path(path).expanduser()
    if path.is_dir() and not folder:
        raise ValueError(f"{what} {path}: is a directory, expected a file")
    if path.exists() and not path.is_dir() and folder:
        raise ValueError(f"{what} {path}: is a file, expected a folder")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
    probe = parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise ValueError(f"{what} {path}: cannot write in {parent} ({err.strerror})") from None
    probe.unlink()


def move_aside(path: str | Path, why: str) -> Path:
    """Rename a corrupt cache file ``NAME`` to ``NAME.corrupt-<time>`` (kept for inspection, out of the
    way of a rebuild) and say so in one line on stderr. Returns the new path."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    os.replace(path, aside)
    print(f"warning: {path}: {why}; moved to {aside.name}, it will be rebuilt", file=sys.stderr)
    return aside
