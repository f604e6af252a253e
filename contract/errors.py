"""Exceptions for mistakes a user can fix. Each message names the problem and the fix.

Command-line entry points catch :class:`ToolkitError`, print its message without a traceback
and exit non-zero; anything else is a bug and keeps its traceback.
"""


class ToolkitError(Exception):
    """Base class: a user-facing error whose message says what was wrong and what to do."""

    exit_code = 2


class ModelLayoutError(ToolkitError):
    """A model directory is missing, incomplete or not in the diffusers SVD layout."""


class BundleError(ToolkitError):
    """A bundle directory or its manifest.json is missing, corrupt or incompatible."""


class ShapeError(ToolkitError):
    """Inputs do not match a network spec (names, dtypes, ranks, sizes)."""


class ValidationError(ToolkitError):
    """An exported graph disagrees with PyTorch beyond its tolerance."""


class BackendUnavailableError(ToolkitError):
    """A backend (TensorRT, a GPU, an execution provider) is not available here."""


class EngineCacheError(ToolkitError):
    """An engine was built for another TensorRT version, GPU, precision or profile."""


class UnknownNetworkError(ToolkitError):
    """A network name that the toolkit does not know."""
