"""Shared command-line plumbing: user errors print one clear line and exit non-zero."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys

from export.errors import ToolkitError


def run_cli(main):
    """Decorate a ``main(argv) -> int`` so that :class:`ToolkitError` becomes ``error: ...``."""

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            return main(argv) or 0
        except ToolkitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


@contextlib.contextmanager
def quiet_logging(quiet: bool):
    """Within a CLI run: only warnings and errors when ``quiet``, and no weight-loading bars of the
    Hugging Face libraries (they read ``HF_HUB_DISABLE_PROGRESS_BARS``); both restored afterwards."""
    import os

    root = logging.getLogger()
    level, bars = root.level, os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    if quiet:
        root.setLevel(logging.WARNING)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        yield
    finally:
        root.setLevel(level)
        if bars is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = bars
