"""sha256 of large files, remembered by their stat: a graph is hashed once, not at every start.

Checking a bundle's graphs against their manifest sha256 reads every byte (seconds for a
multi-GB UNet). :class:`ChecksumCache` keeps each file's digest with its size, mtime, ctime and
inode (as git's index does); while all four are unchanged the file is taken as unchanged. ctime
cannot be set by ``touch`` or ``os.utime``, so a rewritten file is hashed again. The record is one
JSON file written atomically; where it cannot be written, files are hashed as before.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from contract.atomic import write_json_atomic
from contract.bundle import sha256_file

log = logging.getLogger(__name__)


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class ChecksumCache:
    """Digests of files by path, valid while the file's (size, mtime, ctime, inode) is unchanged.

    Args:
        record: the JSON file holding ``{absolute path: [size, mtime_ns, ctime_ns, inode, sha256]}``.
    """

    def __init__(self, record: str | os.PathLike):
        self.record = Path(record)
        try:
            data = json.loads(self.record.read_text())
            self._entries = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self._entries = {}

    def sha256(self, path: str | os.PathLike) -> str:
        """The file's sha256: remembered while its stat is unchanged, else read (and remembered)."""
        path = Path(path).resolve()
        stat = _stat_key(path)
        known = self._entries.get(str(path))
        if isinstance(known, list) and known[:4] == stat and isinstance(known[4], str):
            return known[4]
        digest = sha256_file(path)
        if _stat_key(path) == stat:  # not changed while it was read
            self._entries[str(path)] = [*stat, digest]
            try:
                write_json_atomic(self.record, self._entries)
            except OSError as exc:  # a read-only bundle: hash at every start, as without the cache
                log.debug("could not write %s: %s", self.record, exc)
        return digest
