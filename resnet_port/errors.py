"""Error types shared by every part of the toolkit.

The command-line tools turn an `InputError` into a one-line message and exit code 2 ("unusable
input"); anything else is a bug and keeps its traceback.  Messages name the file, the layer or the
tensor, and say what was expected and what was found.
"""

from __future__ import annotations

import re


class ResnetPortError(Exception):
    """Base class of every error this toolkit raises on purpose."""


def one_line(text: str) -> str:
    """Fold a message onto one line.

    Messages often quote a foreign exception (torch, protobuf, h5py), and some of those span lines
    (torch's "expected one of:" lists); the command line promises one line per error, so line
    breaks and the indentation after them become single spaces.
    """
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


class InputError(ResnetPortError):
    """The user's input (a file, an option, a name) cannot be used as given.  CLI exit code 2.

    The message is always one line, whatever foreign exception text it quotes.
    """

    exit_code = 2

    def __init__(self, message: object = "", *args: object) -> None:
        if isinstance(message, str):
            message = one_line(message)
        super().__init__(message, *args)


class SpecError(InputError, ValueError):
    """An architecture spec or arch name is not valid."""


class CheckpointError(InputError):
    """A checkpoint file cannot be read, or does not hold what it claims."""


class ConversionError(InputError):
    """A source model cannot be mapped onto the reference ResNet."""
