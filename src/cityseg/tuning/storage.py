"""Where a study lives: Optuna's RDB storage, SQLite by default, any SQL server by URL.

The embedded default, `runs/tune/<study>/study.db`, needs no setup; `--storage
postgresql://...` (or mysql://) lets several machines run trials of one study. Both
are `optuna.storages.RDBStorage` with a heartbeat: a trial whose process was killed
stops beating, and once its last beat is older than the grace period (twice the
heartbeat) Optuna marks it failed and `RetryHeartbeatStaleTrialCallback` queues its
parameters again. That is how `cityseg tune` resumes after a crash without knowing
whether the other processes of the study are alive: the engine decides from the beats.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.errors import DataError, UsageError, first_line

if TYPE_CHECKING:
    import optuna

STUDY_DB = "study.db"
IDENTITY_ATTR = "cityseg"
"""The study's user attribute holding what makes its trials comparable."""
MAX_RETRIES = 3
OPEN_ATTEMPTS = 4
"""A configuration whose process dies this many times is left failed."""


@dataclass(frozen=True)
class StudyPlace:
    """A study's name, its folder of trial runs, and its storage URL."""

    name: str
    folder: Path
    url: str

    @property
    def embedded(self) -> bool:
        return self.url.startswith("sqlite:")


def study_place(project: Path, name: str, storage: str | None) -> StudyPlace:
    """`project/<name>/`, with the SQLite file inside it unless `storage` names a server."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--study {name!r} must be a plain folder name")
    folder = project / name
    if storage is None:
        return StudyPlace(name, folder, f"sqlite:///{(folder / STUDY_DB).as_posix()}")
    if "://" not in storage:
        raise UsageError(
            f"--storage {storage!r} is not a database URL; use e.g. "
            "postgresql://user:password@host/db or sqlite:///path/study.db"
        )
    return StudyPlace(name, folder, storage)


def open_storage(place: StudyPlace, heartbeat: int) -> optuna.storages.RDBStorage:
    """The study's RDB storage with heartbeats, and retries of trials that stopped beating.

    Machines started together all find an empty database and create Optuna's tables at
    once; PostgreSQL then refuses all but one (a duplicate key in its catalogue). The
    tables exist by the next try, so a failed open is tried again a few times.
    """
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return _rdb_storage(place, heartbeat)
        except DataError:
            if attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _rdb_storage(place: StudyPlace, heartbeat: int) -> optuna.storages.RDBStorage:
    import optuna

    if place.embedded:
        place.folder.mkdir(parents=True, exist_ok=True)
    engine: dict[str, Any] = {}
    if place.embedded:
        # Two processes on one file: wait for the other's write lock instead of failing.
        engine = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(
            place.url,
            engine_kwargs=engine,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES
            ),
        )
    except ImportError as exc:
        raise UsageError(
            f"--storage {redacted(place.url)} needs a database driver: {exc}; for PostgreSQL "
            "run pip install 'psycopg[binary]'"
        ) from exc
    except Exception as exc:  # SQLAlchemy's OperationalError and friends: one line
        raise DataError(f"cannot open study storage {redacted(place.url)}: {_reason(exc)}") from exc


def check_identity(study: optuna.Study, identity: dict[str, Any], place: StudyPlace) -> None:
    """A new study records `identity` (space, fixed settings, objective); an old one
    must match it, or its trials would be ranked against ones trained differently."""
    stored = study.user_attrs.get(IDENTITY_ATTR)
    wanted = json.loads(json.dumps(identity, sort_keys=True, default=str))
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, wanted)
        return
    if stored != wanted:
        keys = set(stored) | set(wanted)
        changed = sorted(key for key in keys if stored.get(key) != wanted.get(key))
        raise UsageError(
            f"study {place.name!r} was started with other {', '.join(changed)}; resume it "
            "with the same options, or start a new one with --study NAME"
        )


def redacted(url: str) -> str:
    """A URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"


def _reason(exc: Exception) -> str:
    return first_line(getattr(exc, "orig", None) or exc)
