"""Loaded at start-up by the gate's worker processes when this directory is on their PYTHONPATH
(test-only): ``SFV_TEST_SLOWDOWN=STAGE:FRACTION`` slows that stage (see ``tests/slowdown.py``)."""

import os
import sys

if os.environ.get("SFV_TEST_SLOWDOWN"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    import slowdown

    slowdown.install(*slowdown.parse(os.environ["SFV_TEST_SLOWDOWN"]))
    sys.path.pop(0)
