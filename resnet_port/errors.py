"""Error types shared by every part of the toolkit.

The command-line tools turn an `InputError` into a one-line message and exit code 2 ("unusable
input"); anything else is a bug and keeps its traceback.  Messages name the file, the layer or the
tensor, and say what was expected and what was found.
"""

from __future__ import annotations


class ResnetPortError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class InputError(ResnetPortError):
    """The user's input (a file, an option, a name) cannot be used as given.  CLI exit code 2."""

    exit_code = 2


class SpecError(InputError, ValueError):
    """An architecture spec or arch name is not valid."""


class CheckpointError(InputError):
    """A checkpoint file cannot be read, or does not hold what it claims."""


class ConversionError(InputError):
    """A source model cannot be mapped onto the reference ResNet."""
