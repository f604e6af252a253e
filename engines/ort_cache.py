"""ONNX Runtime's optimised graphs, kept between starts (the optimised-graph cache).

ONNX Runtime optimises a graph every time it creates a session (fusions, constant folding, the
NCHWc layout): 0.4 s of the tiny UNet's 0.5 s session start on a 2-core Xeon. A session can write
the graph it optimised (``SessionOptions.optimized_model_filepath``); a later session that loads
that graph with optimisation off starts about 3x faster and computes the same numbers.

The optimised graph is only valid where it was made: the NCHWc transformer picks its block size
by the CPU's vector extensions, and ORT's fused operators change between versions. So an entry's
key names everything the graph depends on (:func:`cache_key`): the ORT version, the machine and
every CPU flag, the source graph's sha256, the optimisation level and the session entries that
steer the optimiser. A foreign or stale entry has another key and is never used; a new entry is
written beside it. The C++ runtime computes the same key (runtime/cpp/src/ort_cache.cpp), so
either runtime uses the entries the other wrote.

Layout: ``CACHE/<first 32 hex digits of sha256(key)>/`` holds ``model.onnx``, its weights in
``model.onnx.data`` and ``key.txt`` (the full key, compared on every use). An entry is written
in a temporary directory and renamed into place, so a reader sees a whole entry or none; where
the cache directory is not writable (a read-only bundle) sessions start as before, from the
source graph. Only CPU sessions use the cache (GPU providers' optimised graphs are theirs).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from contract.atomic import usual_permissions
from contract.environment import cpu_flags

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "ort-cache"  # default: inside the bundle (BUNDLE/ort-cache)
CHECKSUMS_FILE = "sha256.json"  # the graphs' checked digests by stat (contract/checksums.py), same directory
KEY_VERSION = 1  # bump when the entry layout or the key's lines change
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # weights beside the graph: no 2 GiB protobuf limit (the real UNet)
KEY_FILE = "key.txt"
LEVEL = "all"  # ORT_ENABLE_ALL, the level every CPU session of the toolkit runs
# Session config entries that reach the graph optimiser, as every CPU session sets them
# (engines/ort_engine.py EXACT_INT8_GEMM; runtime/cpp/src/session.cpp sets the same).
OPTIMISER_CONFIG = ("session.x64quantprecision=1",)


def cache_key(graph_sha256: str, ort_version: str | None = None, flags: frozenset[str] | None = None,
              machine: str | None = None) -> str:
    """The key text of ``graph_sha256``'s optimised graph on this machine (one ``name value`` per line).

    The arguments other than the graph's sha256 default to this process's ORT and CPU; they are
    parameters so that tests can ask for another machine's key.
    """
    if ort_version is None:
        ort_version = ort.__version__
    lines = [
        f"sfv-ort-cache {KEY_VERSION}",
        f"onnxruntime {ort_version}",
        f"machine {machine if machine is not None else platform.machine()}",
        f"cpu_flags {' '.join(sorted(cpu_flags() if flags is None else flags))}",
        f"graph {graph_sha256}",
        f"level {LEVEL}",
        *(f"config {c}" for c in OPTIMISER_CONFIG),
    ]
    return "\n".join(lines) + "\n"


def entry_name(key: str) -> str:
    """The entry directory's name: the first 32 hex digits of the key's sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class GraphCache:
    """The optimised-graph cache in ``root`` (created on the first write)."""

    root: Path

    def lookup(self, key: str) -> Path | None:
        """The cached optimised graph for ``key``, or ``None`` (no entry, or one whose key differs)."""
        entry = self.root / entry_name(key)
        if not entry.exists():
            return None
        try:
            if (entry / KEY_FILE).read_text() == key and (entry / MODEL_FILE).is_file():
                return entry / MODEL_FILE
        except (OSError, UnicodeDecodeError):
            pass
        # Entries appear whole (renamed into place), so this one was damaged or edited: replaced.
        log.warning("ORT cache entry %s does not hold this key's graph; writing it again", entry)
        self.remove(key)
        return None

    def remove(self, key: str) -> None:
        """Delete ``key``'s entry (moved aside first, so no reader sees it half-deleted)."""
        entry = self.root / entry_name(key)
        try:
            aside = Path(tempfile.mkdtemp(prefix=f".old-{entry.name}-", dir=self.root))
            os.replace(entry, aside / "entry")
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def begin(self, key: str) -> "PendingEntry | None":
        """A temporary entry to write ``key``'s graph into, or ``None`` where the cache is not writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry_name(key)}-", dir=self.root))
            usual_permissions(tmp)  # not private to this user once renamed into place
        except OSError as exc:
            log.info("ORT cache %s is not writable (%s): sessions optimise their graphs at every start; "
                     "pass a writable --ort-cache DIR to keep them", self.root, exc.strerror or exc)
            return None
        return PendingEntry(self, key, tmp)


@dataclass(frozen=True)
class PendingEntry:
    """An entry being written: ``model`` is where ORT writes the graph; :meth:`commit` publishes it."""

    cache: GraphCache
    key: str
    tmp: Path

    @property
    def model(self) -> Path:
        return self.tmp / MODEL_FILE

    def commit(self) -> Path | None:
        """Rename the finished entry into place (atomic); another process's entry for the same key wins."""
        final = self.cache.root / entry_name(self.key)
        try:
            if not self.model.is_file():
                raise OSError(f"ONNX Runtime wrote no {MODEL_FILE}")
            (self.tmp / KEY_FILE).write_text(self.key)  # last: an entry with its key is complete
            os.rename(self.tmp, final)
            return final / MODEL_FILE
        except OSError as exc:
            if not final.is_dir():
                log.info("could not write ORT cache entry %s: %s", final, exc)
            return None
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def saving_options(options, entry: PendingEntry):
    """``options`` made to write the optimised graph into ``entry`` (weights in :data:`DATA_FILE`)."""
    options.optimized_model_filepath = str(entry.model)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    # ORT warns that an NCHWc graph is hardware-specific: that is what the key is for.
    options.log_severity_level = max(options.log_severity_level, 3)
    return options
