"""What the commands print into a log: no carriage-return bars off a terminal, nothing with --quiet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("quiet", [False, True])
def test_export_writes_no_progress_bars_into_a_log(tmp_path, quiet):
    # stderr is a pipe here, as in CI: the Hugging Face weight-loading bars must stay off.
    argv = [sys.executable, "-m", "export.onnx", "--model", "tiny", "--networks", "image_encoder",
            "--out", str(tmp_path / "b"), "--no-validate", *(["--quiet"] if quiet else [])]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "Loading weights" not in proc.stderr, proc.stderr[-2000:]
    if quiet:
        assert proc.stderr.strip() == "" and proc.stdout.strip() == "", (proc.stdout, proc.stderr)
    else:
        assert "image_encoder" in proc.stderr + proc.stdout  # still says what it did
