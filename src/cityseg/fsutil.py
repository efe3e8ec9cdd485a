"""Atomic file writes, so that an interrupted command never leaves a half-written file.

Every output goes to a temporary file beside its destination and is renamed into place,
which POSIX makes atomic. A re-run can therefore trust that any file it finds is whole,
and that is what lets `prepare` resume by skipping files that already exist.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cityseg.errors import CitysegError, DiskFullError, UsageError


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
