"""Small checks the readers share, each failing with a one-line `DataError` naming where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cityseg.errors import DataError


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such annotation file") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc


def number(value: Any, source: str, what: str) -> float:
    """A JSON number; bools are refused although Python counts them as ints."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{source}: {what} must be a number, got {value!r}")
    return float(value)


def field(obj: Any, key: str, source: str) -> Any:
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{source}: missing {key!r}")
    return obj[key]
