"""Benchmark option mistakes a user can fix (printed as ``error: ...`` by the CLIs)."""

from contract.errors import ToolkitError


class BenchmarkError(ToolkitError):
    """An invalid benchmark option (repeats, threads, configurations, shapes) or a failed gate input."""
