"""Atomic writes: a writer killed mid-file leaves nothing under the final name; permissions as
``open`` gives them, read without touching the process's umask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contract.atomic import atomic_path, current_umask, write_bytes_atomic

ROOT = Path(__file__).resolve().parents[1]

# Writes 1 MiB chunks through atomic_path forever, announcing the first one on stdout.
_WRITER = textwrap.dedent(
    """
    import sys
    from contract.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"x" * (1 << 20)); f.flush()
            print("writing", flush=True)
            while True:
                f.write(b"x" * (1 << 20)); f.flush()
    """
)


def _kill_writer_mid_file(final: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(final)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("existing", [False, True])
def test_killed_writer_leaves_no_file_at_the_final_path(tmp_path, existing):
    final = tmp_path / "out" / "big.bin"
    if existing:
        final.parent.mkdir()
        final.write_bytes(b"old")
    _kill_writer_mid_file(final)
    if existing:
        assert final.read_bytes() == b"old"
    else:
        assert not final.exists()


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    final = tmp_path / "a.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_written_file_gets_umask_permissions_without_touching_the_umask(tmp_path, monkeypatch):
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027

        def no_umask(mask):
            raise AssertionError("library code set the process umask")

        monkeypatch.setattr(os, "umask", no_umask)
        write_bytes_atomic(tmp_path / "f.bin", b"data")
        monkeypatch.undo()
        assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    from contract.atomic import atomic_directory

    final = tmp_path / "model"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not final.exists()  # nothing under the final name while writing
    assert (final / "a.txt").read_text() == "1"
    assert (final.stat().st_mode & 0o777) == (0o777 & ~current_umask())  # not mkdtemp's 0700
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]  # the old directory, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary left behind
    with atomic_directory(final) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["c.txt"]
