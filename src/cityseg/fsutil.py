"""Atomic file writes, so that an interrupted command never leaves a half-written file.

Every output goes to a temporary file beside its destination and is renamed into place,
which POSIX makes atomic. A re-run can therefore trust that any file it finds is whole,
and that is what lets `prepare` resume by skipping files that already exist.
"""

from __future__ import annotations

import errno
import glob as globlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cityseg.errors import CitysegError, DataError, DiskFullError, UsageError


@contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to `path`; rename it over `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    with atomic_open(path, "w") as handle:
        handle.write(text)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing, unreadable, not JSON or not an
    object: for the records (trial.json, cost.json, cards) a reader may find torn or
    hand-edited, and then treats as absent."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_folder_record(folder: Path, name: str, what: str) -> Any:
    """The JSON record `name` that makes `folder` a report folder (an export's export.json,
    an evaluation's metrics.json): unlike `read_json_object`, for a reader that must have
    it, so a missing one says `folder` is not `what`, and an unreadable one why."""
    path = folder / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{folder} is not {what} (no {name})") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def disk_error(exc: OSError, path: Path) -> CitysegError:
    """Translate the OS errors a user can fix into one-line errors."""
    if exc.errno == errno.ENOSPC:
        return DiskFullError(f"out of disk space while writing {path}; free some space and re-run")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CitysegError(f"cannot write {path}: permission denied")
    return CitysegError(f"cannot write {path}: {exc.strerror or exc}")


def remove_stale_parts(root: Path) -> int:
    """Delete temp files an interrupted run left behind; returns how many."""
    removed = 0
    if root.is_dir():
        for part in root.rglob(".*.part"):
            part.unlink(missing_ok=True)
            removed += 1
    return removed


def check_output_plan(plan: Iterable[tuple[Path, Path]], verb: str) -> None:
    """Refuse (source, target) plans that overwrite an input or write one output twice.

    `verb` names the command in the advice ("remap them into separate folders").
    """
    pairs = list(plan)
    sources = {source.resolve() for source, _ in pairs}
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        resolved = target.resolve()
        if resolved in sources:
            raise UsageError(f"refusing to overwrite input {source}; choose another -o")
        if resolved in seen:
            raise UsageError(
                f"{seen[resolved]} and {source} would both write {target}; "
                f"{verb} them into separate folders"
            )
        seen[resolved] = source


GLOB_CHARS = frozenset("*?[")


def collect_inputs(
    inputs: Sequence[Path],
    in_folder: Callable[[Path], bool],
    folder_hint: str | Callable[[Path], str],
) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder) for CLI inputs.

    Folders contribute the files `in_folder` accepts, recursively, keeping sub-folders;
    files and glob matches land flat. A path that is none of these is a one-line error
    now, before any work starts. `folder_hint` says what an empty folder lacked; a
    callable is asked after the search, so it can say what `in_folder` turned away.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            matches = sorted(p for p in item.rglob("*") if p.is_file() and in_folder(p))
            if not matches:
                hint = folder_hint(item) if callable(folder_hint) else folder_hint
                raise DataError(f"no {hint} under {item}")
            found.extend((p, p.relative_to(item)) for p in matches)
        elif item.is_file():
            found.append((item, Path(item.name)))
        elif GLOB_CHARS & set(str(item)):
            files = sorted(
                p for p in map(Path, globlib.glob(str(item), recursive=True)) if p.is_file()
            )
            if not files:
                raise DataError(f"no files match {str(item)!r}")
            found.extend((p, Path(p.name)) for p in files)
        else:
            raise DataError(f"{item} does not exist")
    return found
