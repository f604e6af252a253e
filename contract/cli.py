"""Shared command-line plumbing: user errors print one clear line and exit non-zero."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys

from contract.errors import ToolkitError


def run_cli(main):
    """Decorate a ``main(argv) -> int`` so that :class:`ToolkitError` becomes ``error: ...``."""

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            with quiet_logging(False):  # no carriage-return bars of other libraries in a log file
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
    """Within a CLI run: only warnings and errors when ``quiet``; no weight-loading bars of the
    Hugging Face libraries when ``quiet`` or when stderr is not a terminal (a carriage-return bar
    in a CI log is noise). Everything is restored afterwards.

    The bars are switched in three places because each library reads its switch at a different
    time: ``HF_HUB_DISABLE_PROGRESS_BARS`` when huggingface_hub is imported, huggingface_hub's
    flag when transformers is imported, transformers' own flag afterwards.
    """
    root = logging.getLogger()
    level, env = root.level, os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    bars_off = quiet or not sys.stderr.isatty()
    restore = []
    if quiet:
        root.setLevel(logging.WARNING)
    if bars_off:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        hub = sys.modules.get("huggingface_hub.utils")
        if hub is not None and not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            restore.append(hub.enable_progress_bars)
        tf_logging = sys.modules.get("transformers.utils.logging")
        if tf_logging is not None and tf_logging.is_progress_bar_enabled():
            tf_logging.disable_progress_bar()
            restore.append(tf_logging.enable_progress_bar)
    try:
        yield
    finally:
        root.setLevel(level)
        for undo in restore:
            undo()
        if env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
