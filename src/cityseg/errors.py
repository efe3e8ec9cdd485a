"""The errors a user can cause, each printed by the CLI as one line.

Everything a user can get wrong (a path, a file, an option value) raises a
`CitysegError` whose message says what is wrong and what to do. The CLI prints it
as one red line and exits 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CitysegError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class UsageError(CitysegError):
    """Options that do not fit together; exits 2 like the CLI parser's own errors."""

    exit_code = 2


class DataError(CitysegError):
    """An input file or archive that is missing, unreadable or malformed."""


class UnsafeArchiveError(DataError):
    """A zip member that would write outside the output or is implausibly large."""


class UnknownLabelError(DataError):
    """A mask pixel holds an id that the chosen scheme does not map."""


class DiskFullError(CitysegError):
    """The output device ran out of space; what was written so far is kept."""


def first_line(exc: BaseException) -> str:
    """A library's exception as the one line our messages quote (its type when empty):
    some (PyYAML, SQLAlchemy, TensorFlow) carry pages of context after the first line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
