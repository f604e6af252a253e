"""Shared command-line plumbing: user errors print one clear line and exit non-zero."""

from __future__ import annotations

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
