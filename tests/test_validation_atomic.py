"""Issue 12 §4: atomic writes leave one complete version visible, repair a kill between the two
renames of the fallback swap, clean up leftovers of killed writers, and respect the umask."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from factories import make_lists

import distill.atomic as atomic
from distill.atomic import atomic_folder, recover, swap_folder, write_json_atomic
from distill.data.lists import load_lists, save_lists

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _version(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text(tag)
    (folder / "b.txt").write_text(tag)
    return folder


def test_stale_temp_folders_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    dest = tmp_path / "lists"
    dead = _dead_pid()
    stale = [_version(tmp_path / f".lists.tmp-{dead}-0123abcd", "x"),
             _version(tmp_path / f".lists.old-{dead}-89abcdef", "x"),
             _version(tmp_path / ".lists.k3j_9xq2", "x"),        # what mkdtemp wrote before
             _version(tmp_path / ".lists.old-1a2b3c4d", "x")]    # what swap_folder wrote before
    for legacy in stale[2:]:
        os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    alive = _version(tmp_path / f".lists.tmp-{os.getppid()}-0123abcd", "x")  # a live writer's: kept
    fresh_legacy = _version(tmp_path / ".lists.abcd1234", "x")               # maybe still being written: kept
    unrelated = _version(tmp_path / ".other.tmp-1-0123abcd", "x")
    ds = load_lists(make_lists(tmp_path / "l.jsonl"))
    save_lists(ds, dest)
    assert not any(p.exists() for p in stale)
    assert alive.exists() and fresh_legacy.exists() and unrelated.exists()
    assert load_lists(dest).to_list() == ds.to_list()


def test_swap_keeps_a_complete_version_visible_at_every_instant(tmp_path):
    dest = _version(tmp_path / "out", "v0")
    missing, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            # (a reader holding the old folder open may see its files deleted after the swap:
            # POSIX keeps only opened files, so the visibility asked for is of the path)
            try:
                os.close(os.open(dest, os.O_RDONLY))
            except FileNotFoundError:
                missing.append("gone")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 200):
            with atomic_folder(dest) as work:
                (work / "a.txt").write_text(f"v{i}")
                (work / "b.txt").write_text(f"v{i}")
    finally:
        stop.set()
        thread.join()
    assert (dest / "a.txt").read_text() == "v199"
    if atomic._exchange(_version(tmp_path / "x", "x"), _version(tmp_path / "y", "y")):
        assert missing == []  # renameat2 exchange: never a gap
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


KILL_BETWEEN_RENAMES = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import distill.atomic as atomic

    atomic._exchange = lambda a, b: False   # the two-rename fallback (file systems without renameat2)
    real, calls = os.replace, []
    def replace(src, dst):
        real(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os._exit(9)                      # killed between `dest -> .old` and `work -> dest`
    atomic.os.replace = replace
    with atomic.atomic_folder(Path(sys.argv[1])) as work:
        (work / "a.txt").write_text("new")
        (work / "b.txt").write_text("new")
""")


def test_kill_between_the_two_renames_is_recovered_on_the_next_start(tmp_path):
    dest = _version(tmp_path / "out", "old")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(dest)], env=env)
    assert proc.returncode == 9
    assert not dest.exists()  # the window the fallback has; the next start repairs it
    actions = recover(dest)
    assert (dest / "a.txt").read_text() == "old" and (dest / "b.txt").read_text() == "old"
    assert any("restored" in a for a in actions)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_reading_lists_repairs_an_interrupted_swap(tmp_path):
    ds = load_lists(make_lists(tmp_path / "l.jsonl"))
    dest = save_lists(ds, tmp_path / "lists")
    os.replace(dest, tmp_path / f".lists.old-{_dead_pid()}-0123abcd")  # the state a kill leaves
    assert load_lists(dest).to_list() == ds.to_list()


def test_fallback_swap_replaces_the_old_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest = _version(tmp_path / "out", "old")
    swap_folder(_version(tmp_path / "new", "new"), dest)
    assert (dest / "a.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_written_files_and_folders_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        ds = load_lists(make_lists(tmp_path / "l.jsonl"))
        folder = save_lists(ds, tmp_path / "lists")
        write_json_atomic(tmp_path / "report.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for path in folder.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
    assert json.loads((tmp_path / "report.json").read_text()) == {"a": 1}


def test_a_failed_write_leaves_the_old_version_and_no_temp(tmp_path):
    dest = _version(tmp_path / "out", "old")
    with pytest.raises(RuntimeError):
        with atomic_folder(dest) as work:
            (work / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (dest / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]
