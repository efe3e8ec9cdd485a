"""What a study's storage knows of its trials, for trial folders that cannot say it.

A trial whose process was killed leaves trial.json saying "running" forever; the study
knows better (Optuna failed it when its heartbeat stopped, and queued its parameters
again). For a study folder with its embedded study.db, compare asks the study.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cityseg.tuning.storage import STUDY_DB

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@lru_cache(maxsize=32)
def trial_fates(study_folder: Path) -> dict[int, tuple[str, str | None]]:
    """Trial number -> (state, reason) from `study_folder/study.db`; {} without one."""
    database = study_folder / STUDY_DB
    if not database.is_file():
        return {}
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(
                study_name=study_folder.name, storage=f"sqlite:///{database.as_posix()}"
            )
            trials = study.get_trials(deepcopy=False)
            retries = {
                RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t.number for t in trials
            }
    except Exception:  # an unreadable or foreign database: the folders speak for themselves
        return {}
    finally:
        optuna.logging.set_verbosity(before)
    return {t.number: _fate(t, retries.get(t.number)) for t in trials}


def _fate(trial: FrozenTrial, retried_as: int | None) -> tuple[str, str | None]:
    state = trial.state.name.lower()
    error = trial.user_attrs.get("error")
    if state == "fail" and error:
        return "failed", str(error)
    if state == "fail":
        again = (
            f"; its parameters were retried as trial {retried_as}" if retried_as is not None else ""
        )
        return "failed", f"its process stopped mid-trial (no heartbeat){again}"
    return {"complete": "complete", "pruned": "pruned", "running": "running"}.get(
        state, state
    ), None
