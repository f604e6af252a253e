"""Run a command without root's permission override, so that a read-only directory is read-only.

As root (the CI runs as root) a 0555 directory is writable: CAP_DAC_OVERRIDE skips the mode bits.
``setpriv`` (util-linux) drops that capability (and CAP_DAC_READ_SEARCH) from the bounding and
inheritable sets before exec, so the child meets the mode bits as any user would.
"""

from __future__ import annotations

import os
import shutil

import pytest

CAPS = "-dac_override,-dac_read_search"


def unprivileged(cmd: list) -> list:
    """``cmd`` (stringified) as a command that cannot write into a 0555 directory; skips without setpriv as root."""
    cmd = [str(c) for c in cmd]
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot make a directory read-only for this process")
    return ["setpriv", f"--inh-caps={CAPS}", f"--bounding-set={CAPS}", *cmd]
