"""What every function of the Python API shares: its messages and its path arguments."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cityseg.errors import UsageError
from cityseg.runs import parse_size

Log = Callable[[str], None]
PathLike = str | os.PathLike[str]


def logger(verbose: bool, log: Log | None = None) -> Log:
    """Where an API call's messages go: `log` when given, else `print` when verbose.

    `print`, because a notebook shows stdout plainly while stderr comes out in red as if
    it were an error. The CLI, whose stdout is for results, passes its stderr `note` as
    `log` (and `verbose=not quiet` for the bars), so that `-q` hides the bars but never
    the notes, as it always has.
    """
    if log is not None:
        return log
    return print if verbose else _silent


def _silent(message: str) -> None:
    del message


def optional_path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def size_of(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """`"512x1024"` or `(512, 1024)` as (height, width), checked as `--size` is."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise UsageError(f"size must be (height, width) or 'HEIGHTxWIDTH', got {value!r}")
    return parse_size(f"{value[0]}x{value[1]}")
