"""One trial as Optuna runs it, in this process: pruned after an epoch, or scored on two
objectives. Tiny U-Nets from scratch on 32x64 scenes, one or two epochs each."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from cityseg.config import TrainConfig
from cityseg.tuning.space import space_from_options
from cityseg.tuning.trial import TRIAL_RECORD, TrialPlan, make_objective

pytestmark = pytest.mark.slow

TINY = {"height": 32, "width": 64, "arch": "unet-scratch", "base_filters": 4, "weights": "none"}


def one_trial(data: Path, folder: Path, *, prune: bool) -> optuna.trial.FrozenTrial:
    """A 2-epoch trial in a study whose pruner stops every trial it is asked about."""
    base = TrainConfig(data=data, epochs=2, batch=4, patience=0, **TINY)  # type: ignore[arg-type]
    plan = TrialPlan(
        base=base,
        space=space_from_options({"lr": "1e-3:1e-2:log"}),
        objectives=("miou",),
        folder=folder,
        trials=1,
        prune=prune,
    )
    always = optuna.pruners.ThresholdPruner(lower=1.01)  # every mIoU is below it
    study = optuna.create_study(direction="maximize", pruner=always)
    study.optimize(make_objective(plan, lambda: None), n_trials=1)
    return study.trials[0]


def epochs_logged(run_dir: Path) -> int:
    with (run_dir / "metrics.csv").open() as rows:
        return len(list(csv.DictReader(rows)))


def test_a_pruned_trial_stops_after_that_epoch_and_says_so(tiny_data: Path, tmp_path: Path):
    trial = one_trial(tiny_data, tmp_path, prune=True)
    run_dir = tmp_path / "trial-0"
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]
    assert epochs_logged(run_dir) == 1 and (run_dir / "best").is_dir()
    record = json.loads((run_dir / TRIAL_RECORD).read_text())
    assert record["state"] == "pruned" and record["reason"] == "pruned after epoch 1"


def test_without_pruning_the_same_trial_runs_every_epoch(tiny_data: Path, tmp_path: Path):
    trial = one_trial(tiny_data, tmp_path, prune=False)
    assert trial.state == optuna.trial.TrialState.COMPLETE and not trial.intermediate_values
    assert epochs_logged(tmp_path / "trial-0") == 2
    record = json.loads((tmp_path / "trial-0" / TRIAL_RECORD).read_text())
    assert record["state"] == "complete" and record["values"]["miou"] == trial.value


def test_miou_and_latency_give_a_pareto_front(tiny_data: Path, tmp_path: Path) -> None:
    import cityseg

    report = cityseg.tune(
        space={"base_filters": [4, 16]}, objective="miou,latency", trials=2, study="p",
        project=tmp_path, data=tiny_data, epochs=1, batch=4, patience=0, verbose=False,
        **{name: value for name, value in TINY.items() if name != "base_filters"},
    )  # fmt: skip
    study = optuna.load_study(study_name="p", storage=report.storage)
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2 and report.counts.complete == 2
    assert all(t.user_attrs["latency_ms"] == t.values[1] > 0 for t in trials)
    front = {best.number for best in report.best}
    assert front == {t.number for t in trials if not any(beats(o, t) for o in trials)}
    written = json.loads(Path(report.best_json or "").read_text())["best"]
    assert {entry["trial"] for entry in written} == front
    assert all(set(entry["values"]) == {"miou", "latency"} for entry in written)


def beats(one: optuna.trial.FrozenTrial, other: optuna.trial.FrozenTrial) -> bool:
    """`one` dominates `other`: at least as accurate and as fast, and better at one."""
    (miou, latency), (their_miou, their_latency) = one.values, other.values
    at_least = miou >= their_miou and latency <= their_latency
    return at_least and (miou > their_miou or latency < their_latency)
