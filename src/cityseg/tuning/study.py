"""`cityseg tune`: run a study's trials until it has as many as asked, then say the best.

The search is Optuna's (TPE sampler, median pruner, RDB storage); this module only
decides when to ask for one more trial. `--trials N` counts the whole study, over
every process and every resume, so re-running the same command continues where it
stopped. The loop ends when N trials are complete, pruned or failed for a reason of
their own, and none is still running or queued: a process that is done waits for the
other machines' running trials, and takes over any whose process died (Optuna fails it
once its heartbeat stops, and queues its parameters again).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cityseg.config import TUNE, TrainConfig, TuneConfig
from cityseg.errors import CitysegError, UsageError
from cityseg.tuning.best import BestTrial, best_trials, write_best
from cityseg.tuning.space import SearchSpace, apply_to
from cityseg.tuning.storage import StudyPlace, check_identity, open_storage, study_place
from cityseg.tuning.trial import DIRECTIONS, OBJECTIVES, TRIAL_PREFIX, TrialPlan, make_objective

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialCounts:
    complete: int
    pruned: int
    failed: int
    """Failed for a reason of their own (not a process that died and was retried)."""
    running: int
    waiting: int

    @property
    def claimed(self) -> int:
        """Trials that count towards `--trials`, finished or under way."""
        return self.complete + self.pruned + self.failed + self.running + self.waiting


@dataclass(frozen=True)
class TuneReport:
    """A study after this process's part of it: where it is, its counts, its best."""

    study: str
    folder: Path
    storage: str
    counts: TrialCounts
    best: list[BestTrial]
    """The best trial, or the Pareto front of a multi-objective study."""
    best_json: Path | None


def tune(base: TrainConfig, space: SearchSpace, settings: TuneConfig = TUNE) -> TuneReport:
    """Run trials of `settings.study` until it holds `settings.trials` (see the module)."""
    _check(settings)
    base = apply_to(base, space.fixed)  # best.json's commands then hold the fixed values
    place = study_place(settings.project, settings.study, settings.storage)
    with _optuna_quiet():
        study = _open_study(place, base, space, settings)
        plan = TrialPlan(
            base=base,
            space=space,
            objectives=settings.objectives,
            folder=place.folder,
            trials=settings.trials,
            prune=settings.prune,
            latency_runs=settings.latency_runs,
        )
        logger.info(
            f"study {place.name} ({place.folder}): {settings.trials} trials of "
            f"{space.describe()}; objective {', '.join(settings.objectives)}"
        )
        _run_trials(study, plan, settings)
        best = best_trials(study, settings.objectives)
        best_json = write_best(study, place, base, settings.objectives) if best else None
    return TuneReport(place.name, place.folder, place.url, count_trials(study), best, best_json)


def _check(settings: TuneConfig) -> None:
    if settings.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {settings.trials}")
    unknown = [name for name in settings.objectives if name not in OBJECTIVES]
    if unknown or not settings.objectives or settings.objectives[0] != "miou":
        raise UsageError(
            f"--objective takes miou or miou,latency, got {','.join(settings.objectives)}"
        )
    if len(set(settings.objectives)) != len(settings.objectives):
        raise UsageError(f"--objective names {settings.objectives[0]} twice")
    if settings.heartbeat < 1:
        raise UsageError(f"--heartbeat must be at least 1 second, got {settings.heartbeat}")


def _open_study(
    place: StudyPlace, base: TrainConfig, space: SearchSpace, settings: TuneConfig
) -> optuna.Study:
    import optuna

    storage = open_storage(place, settings.heartbeat)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if settings.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=place.name,
        storage=storage,
        directions=[DIRECTIONS[name] for name in settings.objectives],
        sampler=optuna.samplers.TPESampler(seed=_sampler_seed(storage, place, settings)),
        pruner=pruner,
        load_if_exists=True,
    )
    check_identity(study, _identity(base, space, settings), place)
    _refuse_foreign_folders(study, place)
    _requeue_interrupted(study)
    return study


def _sampler_seed(
    storage: optuna.storages.BaseStorage, place: StudyPlace, settings: TuneConfig
) -> int:
    """`--seed` for a new study, so that it is reproducible; for a resumed or shared
    one, a seed of its own (the seed, the trials so far and this process): with the
    same seed, TPE's first random draws would repeat the configurations already tried."""
    import optuna

    try:
        done = len(optuna.load_study(study_name=place.name, storage=storage).trials)
    except KeyError:  # a new study
        return settings.seed
    return (settings.seed * 1_000_003 + done * 7919 + os.getpid()) % 2**31


def _identity(base: TrainConfig, space: SearchSpace, settings: TuneConfig) -> dict[str, Any]:
    """What must not change between the processes and resumes of one study."""
    from cityseg.configio import json_record

    fixed = json_record(base)
    for name in ("project", "name", "worker_timeout", "cache"):
        fixed.pop(name, None)
    if fixed.get("crop") is None:  # as studies recorded before crops existed
        fixed.pop("crop", None)
    return {"space": space.to_json(), "train": fixed, "objectives": list(settings.objectives)}


def _refuse_foreign_folders(study: optuna.Study, place: StudyPlace) -> None:
    """A new study in a folder that holds trial runs (its study.db deleted, say) would
    number its trials from 0 again and write beside the old ones."""
    if study.get_trials(deepcopy=False):
        return
    leftovers = sorted(p.name for p in place.folder.glob(f"{TRIAL_PREFIX}*") if p.is_dir())
    if leftovers:
        raise UsageError(
            f"{place.folder} holds {', '.join(leftovers[:3])} of a study its storage does not "
            "know; remove them or choose another --study"
        )


def _requeue_interrupted(study: optuna.Study) -> None:
    """A trial stopped by Ctrl-C failed on purpose; resuming tries its parameters again."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if trial.user_attrs.get("interrupted") and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def _run_trials(study: optuna.Study, plan: TrialPlan, settings: TuneConfig) -> None:
    import optuna

    objective = make_objective(plan, lambda: _best_score(study))
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    waited = False
    while True:
        optuna.storages.fail_stale_trials(study)
        counts = count_trials(study)
        if counts.waiting or counts.claimed < settings.trials:
            if deadline is not None and time.monotonic() >= deadline:
                logger.info(f"--timeout {settings.timeout:g}s reached; no new trial started")
                return
            study.optimize(objective, n_trials=1, catch=(CitysegError,), gc_after_trial=True)
            waited = False
        elif counts.running:
            if not waited:
                logger.info(f"waiting for {counts.running} trial(s) running elsewhere")
                waited = True
            time.sleep(settings.heartbeat)
        else:
            return


def count_trials(study: optuna.Study) -> TrialCounts:
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # stable since Optuna 2.8
        retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    retried |= {t.user_attrs.get("retry_of") for t in trials}

    def number_in(state: TrialState) -> int:
        return sum(t.state == state for t in trials)

    failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
    return TrialCounts(
        complete=number_in(TrialState.COMPLETE),
        pruned=number_in(TrialState.PRUNED),
        failed=failed,
        running=number_in(TrialState.RUNNING),
        waiting=number_in(TrialState.WAITING),
    )


def _best_score(study: optuna.Study) -> float | None:
    """The best mIoU of the complete trials (the first objective), for progress lines."""
    from optuna.trial import TrialState

    scores = [
        t.values[0]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values
    ]
    return max(scores) if scores else None


@contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna logs every trial, and a failed one with its traceback; cityseg says both in
    one line each, so Optuna speaks only of errors while a study runs."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)
