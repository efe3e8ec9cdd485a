"""What every function of the Python API shares: its path and size arguments.

Its messages are not here: each call runs inside `cityseg.logs.api_messages(verbose)`,
which shows them on stdout (unless a handler of the user's takes them) and keeps only
the warnings when `verbose=False`.
"""

from __future__ import annotations

import os
from pathlib import Path

from cityseg.errors import UsageError
from cityseg.runs import parse_size

PathLike = str | os.PathLike[str]


def optional_path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def size_of(value: str | tuple[int, int] | None, name: str = "size") -> tuple[int, int] | None:
    """`"512x1024"` or `(512, 1024)` as (height, width), checked as `--size` is (or as
    the flag `name` says: `crop`)."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value, f"--{name}")
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise UsageError(f"{name} must be (height, width) or 'HEIGHTxWIDTH', got {value!r}")
    return parse_size(f"{value[0]}x{value[1]}", f"--{name}")
