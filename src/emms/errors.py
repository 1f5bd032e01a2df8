"""Exceptions raised by EMMS.

Every error caused by what a user passed in is an :class:`InputError`: its message names the
argument and what was expected, and the CLI prints it as one line with a non-zero exit.
"""

from __future__ import annotations


class EmmsError(Exception):
    """Base class of every error EMMS raises on purpose."""


class InputError(EmmsError, ValueError):
    """An argument does not have the shape, dtype, values or format that was expected."""


class ResourceError(EmmsError, RuntimeError):
    """A model, encoder, dataset or cache location cannot be loaded or written."""


class EmmsWarning(UserWarning):
    """A result is computed but may be misleading (dropped columns, small-N regime, ...)."""
