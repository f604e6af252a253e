"""Errors of the runtime's inputs and outputs (the engines' and bundles' live in contract.errors)."""

from contract.errors import ToolkitError


class InputError(ToolkitError):
    """An input image, a generation option or an output path is invalid; the message says which and why."""


class Cancelled(ToolkitError):
    """A generation call was stopped by its progress callback (:mod:`runtime.progress`); nothing was written."""

    exit_code = 130  # as an interrupted command
