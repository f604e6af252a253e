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
    """Within a CLI run: only warnings and errors when ``quiet``; the level is restored afterwards."""
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)
