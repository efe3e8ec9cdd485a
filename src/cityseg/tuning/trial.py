"""One trial of a study: a normal training run, scored, with its story in trial.json.

A trial is `cityseg.train` into `runs/tune/<study>/trial-<n>/`, so compare, evaluate,
predict and export take it like any run. Each epoch's score goes to the Optuna trial
(`trial.report`), and the pruner may stop it there. trial.json beside config.json says
what became of it (running, complete, pruned or failed, with the reason), which is what
`cityseg compare` shows for trials that never finished.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cityseg.config import TrainConfig
from cityseg.errors import CitysegError
from cityseg.fsutil import atomic_write_json, read_json_object
from cityseg.logs import only_messages_from
from cityseg.training.train import TrainingInterrupted
from cityseg.tuning.space import SearchSpace, Value, apply_to

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)
TUNE_LOGGER = "cityseg.tuning"
"""The study's own messages; the training and scoring inside a trial say only warnings."""

TRIAL_RECORD = "trial.json"
TRIAL_PREFIX = "trial-"
OBJECTIVES = ("miou", "latency")
DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {
    "miou": "maximize",
    "latency": "minimize",
}


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a study shares: the fixed settings, the space, the objectives."""

    base: TrainConfig
    space: SearchSpace
    objectives: tuple[str, ...]
    folder: Path
    trials: int
    prune: bool
    latency_runs: int = 10


def trial_name(number: int) -> str:
    return f"{TRIAL_PREFIX}{number}"


def trial_config(plan: TrialPlan, number: int, values: dict[str, Value]) -> TrainConfig:
    config = apply_to(plan.base, values)
    return dataclasses.replace(config, project=plan.folder, name=trial_name(number))


def describe_values(values: dict[str, Any]) -> str:
    return "  ".join(f"{name}={_short(value)}" for name, value in values.items())


def write_record(run_dir: Path, **fields: Any) -> None:
    """Merge `fields` into the trial's trial.json (when its run folder exists)."""
    path = run_dir / TRIAL_RECORD
    if run_dir.is_dir():
        atomic_write_json(path, {**(read_json_object(path) or {}), **fields})


def make_objective(
    plan: TrialPlan, best_so_far: Callable[[], float | None]
) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
    """Optuna's objective: train one configuration, return its score(s)."""

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        values = plan.space.suggest(trial)
        config = trial_config(plan, trial.number, dict(values))
        run_dir = config.project / trial_name(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        logger.info(f"trial {trial.number + 1}/{plan.trials}  {describe_values(dict(values))}")
        try:
            return _train_and_score(plan, trial, config, run_dir, best_so_far)
        except TrainingInterrupted:
            # Ctrl-C: the trial fails on purpose, and a resumed study retries it.
            trial.set_user_attr("interrupted", True)
            write_record(run_dir, state="failed", reason="interrupted (Ctrl-C)")
            raise KeyboardInterrupt from None
        except CitysegError as exc:
            _fail(trial, run_dir, str(exc))
            raise
        finally:
            _release_memory()

    return objective


def _train_and_score(
    plan: TrialPlan,
    trial: optuna.Trial,
    config: TrainConfig,
    run_dir: Path,
    best_so_far: Callable[[], float | None],
) -> float | tuple[float, ...]:
    import optuna

    from cityseg.api.run import train
    from cityseg.comparison.cost import latency_ms
    from cityseg.tuning.reporter import TrialReporter

    reporter = TrialReporter(
        trial,
        run_dir,
        epochs=config.epochs,
        prune=plan.prune and len(plan.objectives) == 1,
        best_so_far=best_so_far,
    )
    started = time.monotonic()
    with only_messages_from(TUNE_LOGGER):
        run = train(config, callbacks=[reporter], verbose=False)
    seconds = round(time.monotonic() - started, 1)
    score = run.metrics.best_score
    if reporter.pruned_at is not None:
        write_record(run.path, state="pruned", reason=f"pruned after epoch {reporter.pruned_at}")
        raise optuna.TrialPruned(f"pruned after epoch {reporter.pruned_at}")
    if score is None or not math.isfinite(score):
        raise CitysegError(f"trial {trial.number} has no {run.metrics.monitor} to rank it by")
    values: dict[str, float] = {"miou": score}
    if "latency" in plan.objectives:
        values["latency"] = latency_ms(run.path / "best", plan.latency_runs)
        trial.set_user_attr("latency_ms", values["latency"])
    with only_messages_from(TUNE_LOGGER):
        _evaluate_val(run)
    write_record(run.path, state="complete", values=values, train_seconds=seconds)
    logger.info(
        f"trial {trial.number + 1} done: {run.metrics.monitor} {score:.4f}"
        + (f", latency {values['latency']:.1f} ms" if "latency" in values else "")
    )
    results = tuple(values[name] for name in plan.objectives)
    return results[0] if len(results) == 1 else results


def _evaluate_val(run: Any) -> None:
    """Score best/ on the val split once, so compare has its dice and per-class IoU."""
    from cityseg.dataset.manifest import read_manifest

    data = run.config.data
    if not read_manifest(data)["splits"].get("val"):
        return
    run.best.evaluate(data, "val", project=run.path / "evaluate", name="val")


def _fail(trial: optuna.Trial, run_dir: Path, reason: str) -> None:
    trial.set_user_attr("error", reason)
    write_record(run_dir, state="failed", reason=reason)
    logger.warning(f"trial {trial.number + 1} failed: {reason}")


def _release_memory() -> None:
    """Each trial builds a new model in this process; Keras would keep every graph."""
    from cityseg._tf import keras

    keras.backend.clear_session()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
