"""Atomic writes: an interrupted run never leaves a half file or directory under the final name."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only read by setting,
    which races with other threads creating files)."""
    try:  # Linux 4.7+
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory() as probe:  # elsewhere: the mode a new file gets
        path = os.path.join(probe, "probe")
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o777))
        return 0o777 & ~os.stat(path).st_mode


def usual_permissions(path: Path) -> None:
    """Give a temporary file (0600) or directory (0700) the permissions ``open``/``mkdir`` would give
    (0666 / 0777 less the umask), so a renamed artifact is not private to its writer."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success.

    The temporary file lives in the same directory so that the rename is atomic on POSIX.
    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            usual_permissions(tmp_path)  # mkstemp created it 0600
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary directory beside ``final``; on success it replaces ``final``.

    A directory a reader finds under ``final`` is always a whole one: the old one until the
    rename, the new one after (a previous ``final`` is removed just before). On any exception
    the temporary directory goes and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        usual_permissions(tmp)  # mkdtemp made it 0700
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_npy_atomic(final: str | os.PathLike, array) -> None:
    """``np.save`` through a temporary file (a handle: ``np.save`` would append ``.npy`` to a bare name)."""
    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_json_atomic(final: str | os.PathLike, obj) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
